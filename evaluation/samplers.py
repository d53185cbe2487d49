"""Where to draw latent codes from: the prior N(0, I), or a Gaussian mixture fitted after
training on the training images' posterior means (ex-post density estimation, Ghosh et al.
2020, "From variational to deterministic autoencoders").

The prior's samples of a VAE fall where the aggregate posterior has no mass, and decode to
blends of classes; a mixture fitted to the codes the encoder actually uses does not. The
mixture is kept as plain tensors (weights, means, covariances), saved beside its checkpoint
(loadable with ``weights_only=True``) and sampled with a torch generator, so it is seeded
like everything else.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from core.errors import VaeLabError
from runtime.checkpoints import load_checkpoint_file, save_checkpoint
from runtime.run_files import mixture_path

GMM_FORMAT = 1


def check_components(components: int, n_codes: int) -> None:
    """One line if the mixture would have more components than codes to fit them on."""
    if components > n_codes:
        raise VaeLabError(f"--gmm_components {components} is more than the {n_codes} training images "
                          f"whose codes it is fitted on; use at most {n_codes}")


@dataclass
class GaussianMixtureSampler:
    """A full-covariance Gaussian mixture over latent codes: weights (K,), means (K, d),
    covariances (K, d, d), float64 on the CPU."""

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor

    @classmethod
    def fit(cls, codes: np.ndarray, components: int, seed: int) -> GaussianMixtureSampler:
        """EM (scikit-learn) on ``codes`` (N, d), seeded; one line if there are too few codes."""
        # here: importing scikit-learn costs ~1 s of every run's start-up, and most runs fit no mixture
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import GaussianMixture

        check_components(components, len(codes))
        gmm = GaussianMixture(components, covariance_type="full", random_state=seed)
        with warnings.catch_warnings():  # a mixture that has not fully converged still samples well
            warnings.simplefilter("ignore", ConvergenceWarning)
            gmm.fit(np.asarray(codes, dtype=np.float64))
        return cls(torch.from_numpy(gmm.weights_.copy()), torch.from_numpy(gmm.means_.copy()),
                   torch.from_numpy(gmm.covariances_.copy()))

    @property
    def components(self) -> int:
        return self.weights.shape[0]

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` codes (n, d) float32: a component by its weight, then its Gaussian."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        chol = torch.linalg.cholesky(self.covariances)  # (K, d, d)
        return (self.means[k] + (chol[k] @ eps[:, :, None])[:, :, 0]).float()

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixture's mean (d,) and covariance (d, d)."""
        mean = self.weights @ self.means
        second = torch.einsum("k,kij->ij", self.weights,
                              self.covariances + self.means[:, :, None] * self.means[:, None, :])
        return mean, second - torch.outer(mean, mean)


def model_fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """A hash of a model's weights: which checkpoint a saved mixture belongs to."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        h.update(name.encode())
        h.update(state_dict[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_mixture(gmm: GaussianMixtureSampler, path: str, fingerprint: str, seed: int) -> None:
    save_checkpoint({"format": GMM_FORMAT, "weights": gmm.weights, "means": gmm.means,
                     "covariances": gmm.covariances, "fingerprint": fingerprint, "seed": seed}, path)


def load_mixture(path: str, fingerprint: str, components: int, latent_size: int) -> GaussianMixtureSampler:
    """A saved mixture, refused with one line unless it is this checkpoint's, with these settings."""
    state = load_checkpoint_file(path, "Gaussian mixture")
    try:
        gmm = GaussianMixtureSampler(state["weights"], state["means"], state["covariances"])
        ok_shape = (gmm.means.shape == (gmm.components, latent_size)
                    and gmm.covariances.shape == (gmm.components, latent_size, latent_size))
        theirs = state["fingerprint"]
    except (KeyError, TypeError, AttributeError):
        raise VaeLabError(f"{path!r} is not a saved Gaussian mixture; delete it to fit a new one") from None
    if theirs != fingerprint or not ok_shape:
        raise VaeLabError(f"the Gaussian mixture {path!r} was fitted for another checkpoint; delete it to fit "
                          f"one for this checkpoint")
    if gmm.components != components:
        raise VaeLabError(f"the Gaussian mixture {path!r} has {gmm.components} components but "
                          f"--gmm_components is {components}; delete it or pass --gmm_components {gmm.components}")
    return gmm


def fitted_mixture(codes_fn, checkpoint: str, fingerprint: str, components: int, latent_size: int, seed: int,
                   log=print) -> GaussianMixtureSampler:
    """The mixture saved beside ``checkpoint``, or a new one fitted on ``codes_fn()`` and saved there
    (if the folder is not writable it is used without being saved)."""
    path = mixture_path(checkpoint)
    if os.path.isfile(path):
        gmm = load_mixture(path, fingerprint, components, latent_size)
        log(f"GMM sampler: {path} ({components} components)")
        return gmm
    gmm = GaussianMixtureSampler.fit(codes_fn(), components, seed)
    try:
        save_mixture(gmm, path, fingerprint, seed)
        log(f"GMM sampler: fitted {components} components on the training images' posterior means; saved {path}")
    except VaeLabError as e:
        log(f"note: GMM sampler fitted but not saved ({e})")
    return gmm
