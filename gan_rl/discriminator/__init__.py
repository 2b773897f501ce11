"""The discriminator: its config, the models (a head on a frozen encoder, a classifier, a LoRA adapter on
the generator), the losses, the sample buffer and the update rounds. Knows nothing of TRL."""
