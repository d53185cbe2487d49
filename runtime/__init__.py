"""What keeps a run going and safe, whatever the model: checkpoints (files, validation, the
training state and resume), the optimizer and schedules, torchrun, accelerator options,
TensorBoard events and non-finite checks. Files are written atomically by fileio/."""
