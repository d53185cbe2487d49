"""The run's configuration: RunConfig (run_config.py), every flag of train.py (flags.py), every
cross-flag check (checks.py), the YAML config file (files.py), and how flags, a preset, a config
file and a resumed checkpoint make one config (resolve.py)."""
