"""History files in: the public CSV datasets (REES46, Retailrocket) and
userpulse's own JSON Lines, plain or gzip or on stdin, as rows in the order
``userpulse replay`` and ``userpulse backtest`` run them."""
