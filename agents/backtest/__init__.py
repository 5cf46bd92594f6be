"""The back-test: the worker's engine over a history, in this process, on
stream time (:mod:`~agents.backtest.run`), fed from a history file
(:mod:`~agents.backtest.file`), and what it reports
(:mod:`~agents.backtest.report`)."""
