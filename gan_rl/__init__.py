"""gan-rl: adversarial reinforcement learning for LLMs on top of TRL.

A discriminator learns to tell real responses from the generator's own; its judgement is the reward for
TRL's GRPOTrainer (``gan-rl ppo``) or RLOOTrainer (``gan-rl reinforce``), and a callback retrains it
between policy updates.
"""

__version__ = "0.1.0"

from gan_rl.discriminator_config import DiscriminatorConfig, RewardConfig
from gan_rl.recipe import Recipe, RecipeError, load_recipe

__all__ = ["DiscriminatorConfig", "Recipe", "RecipeError", "RewardConfig", "__version__", "load_recipe"]
