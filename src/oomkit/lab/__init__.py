"""The policy lab: time series and pictures of simulated runs, policies compared over
scenarios, incidents recorded live and replayed on the simulator (docs/lab.md).

One job per module: samples (one sample through the public kernel accessors), contender
(a set of policies to run), timeline (a sampled simulator run), verdict (culprits,
bystanders and the other figures of a run), plot (matplotlib, imported only when a
picture is asked for), recorder (the flight recorder's ring and incident files),
incidents (the daemon's side of it), and the subcommands: simulate (--samples/--plot),
compare, replay, record. The daemon imports recorder and incidents only: standard
library, no matplotlib.
"""
