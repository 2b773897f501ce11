"""The application: the recipe and the TRL configs it builds, the algorithm registry, models and data
from recipes, the commands' runs (``sft``, ``ppo``/``reinforce``, ``generate``, ``evaluate``) and the
``gan-rl`` command line (:mod:`gan_rl.cli.main`)."""
