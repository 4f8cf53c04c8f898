"""The policy lab: time series and pictures of simulated runs, policies compared over
scenarios, incidents recorded live and replayed on the simulator.

One job per module: samples (one sample through the public kernel accessors), contender
(a set of policies to run), timeline (a sampled simulator run), plot (matplotlib, only
when a picture is asked for), simulate/compare/record/replay (the subcommands).
"""
