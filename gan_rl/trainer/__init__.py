"""The discriminator inside a TRL trainer: the reward function, the callback that trains the
discriminator between policy updates, the adversary that builds and attaches both, the SFT loss term,
and the trainers that carry it."""
