"""Every sanity limit of the flags and files, in one place: larger values are typos, and would otherwise fail
deep inside torch (an allocation of terabytes, an int64 overflow) instead of with one line."""

MAX_LATENT = 4096
MAX_MULTIPLIER = 64
MAX_SEED = 2**32 - 1  # numpy and scikit-learn take seeds in [0, 2**32 - 1]
MAX_IMAGE_SIZE = 1024  # pixels a side
MAX_CLASSES = 100_000  # class sub-folders of a --dataset_type folder
MAX_VAMP_COMPONENTS = 10_000  # --vamp_components: pseudo-inputs through the encoder every step
MAX_HVAE_CHANNELS = 64  # --hvae_channels
MAX_MIXTURE = 32  # --mixture_components
MAX_PIXEL_LAYERS = 32  # --pixel_layers
MAX_PIXEL_CHANNELS = 512  # --pixel_channels
# --iw_samples: importance samples per image (cost grows linearly)
MAX_IW_SAMPLES = 100_000
MAX_FID_SAMPLES = 1_000_000  # --fid
MAX_IW_TRAIN = 1000  # --iw_train
MAX_DISC_UNITS = 10_000  # --disc_units
# --factor_images: at most the colour grid
MAX_FACTOR_IMAGES = 6 * 737_280
MAX_SSIM_WINDOW = 27  # --ssim_window_size
# --threads: more compute threads than any machine's cores only spawn threads that wait
MAX_THREADS = 1024
MAX_DEEP_GROUPS = 16  # --deep_groups: latent groups per resolution
MAX_DEEP_LATENT_CHANNELS = 64  # --deep_latent_channels
