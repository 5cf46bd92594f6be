"""Faust's table recovery with its last step in a safe order: the input
partitions are sought to their committed offsets *before* they are resumed.

At the end of a recovery Faust (``faust.tables.recovery.Recovery``, 0.15)
resumes the input partitions, then seeks them to their committed offsets,
then resumes its flow control — which clears every stream's queue. The
flow is already active then (it was resumed to read the changelogs), so
the fetch loop delivers input records inside that window:

- records delivered after the seek are cleared from the queue and never
  fetched again (the consumer's position is past them): a partition's
  commit then stops at the first of them (Faust commits only consecutive
  acknowledgements) and its backlog is never committed — the stall the
  scaling scenario found;
- records of a fetch made before the seek but delivered after it look like
  a jump over the offsets the seek went back to: Faust records those as a
  gap (offsets it will never see, as after a compaction), counts them as
  acknowledged and drops the refetched records as already read — events
  lost and committed past.

:class:`Recovery` does the same steps with the input partitions kept paused
until the seek and the queue clearing are done: nothing of them can be
fetched before the seek, and nothing fetched after it is cleared.
:class:`TableManager` (the app's ``TableManager`` setting, a documented
extension point) makes Faust use it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.tables import TableManager as FaustTableManager
from faust.tables.recovery import Recovery as FaustRecovery


class Recovery(FaustRecovery):
    """Faust's recovery; the input partitions resume only after their seek."""

    async def _resume_streams(self, generation_id: int = 0) -> None:
        """After a rebalance that needed no changelog reading."""
        await self.app.on_rebalance_complete.send()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        await self._start_streams()
        self.tables.on_actives_ready()
        self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        """After the active tables are recovered (standbys keep reading)."""
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        completions = [
            asyncio.ensure_future(
                table.on_recovery_completed(
                    self.actives_for_table[table], self.standbys_for_table[table]
                )
            )
            for table in self.tables.values()
        ]
        if completions:
            await asyncio.wait(completions)
        if self.app.consumer_generation_id != generation_id:
            self.log.warning(
                "Recovery rebalancing again app id %s param %s",
                self.app.consumer_generation_id, generation_id,
            )  # fmt: skip
            return
        await self._start_streams()
        self.tables.on_actives_ready()
        if not self.app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")

    async def _start_streams(self) -> None:
        """Seek the paused input partitions to their committed offsets,
        clear the stream queues (flow-control resume), and only then resume
        the partitions and the flow."""
        app: Any = self.app
        consumer = app.consumer
        assignment = consumer.assignment()
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
        else:
            self.log.info("Resuming streams with empty assignment")
        self.completed.set()
        app.flow_control.resume()  # clears the queues: nothing of the inputs is in them
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
        consumer.resume_flow()
        await app._fetcher.maybe_start()


class TableManager(FaustTableManager):
    """Faust's table manager with :class:`Recovery`."""

    @property
    def recovery(self) -> FaustRecovery:
        if self._recovery is None:
            self._recovery = Recovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
