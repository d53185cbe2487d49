"""What keeps a run going and safe, whatever the model: checkpoints (files, validation, the
training state and resume), the optimizer and schedules, torchrun, accelerator options,
TensorBoard events, non-finite checks and atomic file writes."""
