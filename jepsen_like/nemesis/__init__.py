"""Faults for `python -m jepsen_like run`, each paired with its heal.

* `schedule` — when faults happen and what they hit, from one seed (pure)
* `grudge` — partition shapes: halves, isolate, majority ring (pure)
* `iptables` — our own chain on the loopback node addresses (commands pure, runner small)
* `nemeses` — partition / kill / pause behind one small protocol
* `placement` — membership (join / drain / re-add) and rebalance (leader transfers,
  drain + re-register) through the placement driver
"""
