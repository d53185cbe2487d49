"""train.py's ``--evaluate`` (a table and the eval JSON) and ``--predict`` (pictures and
posterior means), run on a checkpoint's model with the run's config."""
from __future__ import annotations

import os
import time

import torch

from config.run_config import RunConfig, data_options
from core.errors import VaeLabError
from datasets import (
    FACTOR_SETS,
    Split,
    as_float,
    factor_sizes,
    grid_index,
    images_of,
    load_split,
    reshape_images,
    train_val_split,
)
from evaluation.codecs import cached_codec_bits
from evaluation.disentanglement import Represent, Settings, disentanglement_scores
from evaluation.likelihood import iwae_evaluate
from evaluation.metrics import batches, evaluate, posterior_means
from evaluation.pictures import write_predictions
from evaluation.sample_quality import (
    Classifier,
    classifier_accuracy,
    feature_stats,
    frechet_distance,
    load_or_train_classifier,
)
from evaluation.samplers import GaussianMixtureSampler, fitted_mixture, model_fingerprint
from fileio.atomic import write_json
from fileio.dirs import ensure_writable_dir
from losses import DISCRETE, bits_per_dim
from models import VAE
from runtime import metrics


def print_eval_table(results: dict[str, dict]) -> None:
    """One row per split, a column per figure runtime/metrics.py gives a column that some split has."""
    rows = list(results.values())
    shown = [m for m in metrics.columns() if any(m.name in r for r in rows)
             and (m.column.shown is None or m.column.shown(rows))]
    first = rows[0]
    print(f"model: {first.get('family', '?')}")
    ahead = bool(first.get("autoregressive"))
    if ahead:
        print("its decoder sees the pixels before each one: BCE, MSE and SSIM (one step ahead) score each pixel's "
              "prediction from the code and the true pixels before it; MSE and SSIM (from the code) score the "
              "pictures --predict draws from the code alone (the posterior mean, pixel by pixel), on each split's "
              "first " + " / ".join(dict.fromkeys(f"{r['picture_images']:,}" for r in rows if "picture_images" in r))
              + " images")
    # a label may name a field of the split that has the figure, e.g. "IWAE K={iw_samples}"
    labels = [metrics.label(m, ahead).format(**next(r for r in rows if m.name in r)) for m in shown]
    widths = [max(m.column.width, len(label)) for m, label in zip(shown, labels)]
    print(f"{'split':<6} {'images':>7}" + "".join(f" {label:>{w}}" for w, label in zip(widths, labels)))
    for split, r in results.items():
        print(f"{split:<6} {r['n']:>7d}" + "".join(f" {r[m.name]:>{w}{m.fmt}}" if m.name in r else f" {'':>{w}}"
                                                   for m, w in zip(shown, widths)))
    if any("xz_bits_per_dim" in r for r in rows):
        print("b/d: bits per pixel and channel, a lossless code length (PNG and WebP per image, xz over the whole "
              "split); " + ("the model's: its negative ELBO at a code drawn from the posterior (NLL+KL decodes its "
                           "mean) and IWAE bound, with bits-back coding" if any(
                  "bits_per_dim" in r for r in rows) else "a model has one with a discrete likelihood "
                  "(--image_loss_type logistic): the Bernoulli BCE is not a code length of 8-bit pixels"))


@torch.no_grad()
def _decode(model: VAE, z: torch.Tensor, y: torch.Tensor | None, device: torch.device,
            batch_size: int = 1000) -> torch.Tensor:
    """Images (on the CPU) decoded from codes ``z`` (and classes ``y`` for a CVAE), in batches."""
    model.eval()
    return torch.cat([model.decode(z[i:i + batch_size].to(device),
                                   y[i:i + batch_size].to(device) if y is not None else None).cpu()
                      for i in range(0, len(z), batch_size)])


@torch.no_grad()
def _reconstruct(model: VAE, data: Split, device: torch.device) -> torch.Tensor:
    model.eval()
    return torch.cat([model.reconstruct(x, y).cpu() for x, y in batches(data, 1000, device, model.conditional)])


def sample_scores(model: VAE, gmm: GaussianMixtureSampler, splits: dict[str, Split], n: int, seed: int,
                  classifier: Classifier, device: torch.device) -> dict[str, dict]:
    """Per split: the Frechet distance of ``n`` prior samples, ``n`` GMM samples and the split's
    first ``n`` reconstructions to the split's images, in ``classifier``'s feature space; for a
    CVAE, the classifier's accuracy on the prior samples (drawn for classes 0, 1, ... in turn)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % model.num_classes if model.conditional else None
    prior = _decode(model, model.sample_prior(n, g), y, device)
    from_gmm = _decode(model, gmm.sample(n, g), y, device)
    stats = {"prior": feature_stats(classifier, prior, device), "gmm": feature_stats(classifier, from_gmm, device)}
    out = {}
    for split, data in splits.items():
        ref = feature_stats(classifier, data.x, device)
        recon = _reconstruct(model, Split(data.x[:n], data.y[:n]), device)
        out[split] = {"fid_prior": frechet_distance(*stats["prior"], *ref),
                      "fid_gmm": frechet_distance(*stats["gmm"], *ref),
                      "fid_recon": frechet_distance(*feature_stats(classifier, recon, device), *ref),
                      "fid_samples": n}
        if model.conditional:
            out[split]["class_sample_accuracy"] = classifier_accuracy(classifier, prior, y, device)
    return out


def mixture_for(model: VAE, checkpoint: str, train: Split, cfg: RunConfig,
                device: torch.device) -> GaussianMixtureSampler:
    """The GMM sampler of this checkpoint: saved beside it, or fitted on ``train``'s posterior means."""
    return fitted_mixture(lambda: posterior_means(model, train, device), checkpoint,
                          model_fingerprint(model.state_dict()), cfg.gmm_components, model.latent_size, cfg.seed)


def factor_encoder(model: VAE, cfg: RunConfig, device: torch.device, batch_size: int = 1000) -> Represent:
    """The metrics' view of the model: factor combinations (n, F) -> the posterior means (n, D) of their
    images (drawn from the grid, so any combination can be asked for, as the FactorVAE score needs),
    shaped as the run's images."""
    @torch.no_grad()
    def represent(factors):
        model.eval()
        index = grid_index(cfg.dataset_type, factors)
        out = []
        for i in range(0, len(index), batch_size):
            x = reshape_images(images_of(cfg.dataset_type, cfg.data_root, index[i:i + batch_size])[0],
                               cfg.image_size, cfg.channels)
            out.append(model.posterior(as_float(x.to(device)))[0].float().cpu())
        return torch.cat(out).numpy()
    return represent


def disentanglement_report(model: VAE, cfg: RunConfig, device: torch.device) -> dict:
    """--evaluate --disentanglement: the four metrics of the model's posterior means, printed and returned."""
    if model.conditional:
        raise VaeLabError("--disentanglement scores an unconditional code; this checkpoint is a CVAE")
    t0 = time.perf_counter()
    settings = Settings(seed=cfg.seed)
    names = list(FACTOR_SETS[cfg.dataset_type])
    out = disentanglement_scores(factor_encoder(model, cfg, device), factor_sizes(cfg.dataset_type), names,
                                 settings)
    out["seconds"] = time.perf_counter() - t0
    print(f"disentanglement of the posterior means ({cfg.dataset_type}, {out['seconds']:.0f} s): "
          f"MIG {out['mig']:.3f}" + (f" (without shape {out['mig_without_shape']:.3f})" if "mig_without_shape" in out
                                     else "")
          + f", FactorVAE score {out['factorvae_score']:.3f}, DCI D {out['dci_disentanglement']:.3f} "
          f"C {out['dci_completeness']:.3f} I {out['dci_informativeness']:.3f}, SAP {out['sap']:.3f}")
    print("MIG per factor: " + ", ".join(f"{k} {v:.3f}" for k, v in out["mig_per_factor"].items()))
    return out


def run_eval_modes(model: VAE, cfg: RunConfig, device: torch.device) -> dict:
    """``--evaluate`` (table + weights/{lognumber}_eval.json) and ``--predict`` (results/{lognumber}/)."""
    ensure_writable_dir(cfg.weights_dir if cfg.evaluate else cfg.results_dir, "output")
    train, val = train_val_split(cfg.dataset_type, cfg.data_root, cfg.fold, cfg.num_folds, cfg.seed,
                                 **data_options(cfg))
    test = load_split(cfg.dataset_type, cfg.data_root, train=False, **data_options(cfg))
    gmm = mixture_for(model, cfg.resume, train, cfg, device) if cfg.fid or cfg.sampler == "gmm" else None
    summary: dict = {}
    if cfg.evaluate:
        results = {split: {**evaluate(model, data, device, cfg.ssim_window_size), "family": model.family,
                           **({"autoregressive": True} if model.autoregressive else {}),
                           **cached_codec_bits(data.x, os.path.join(cfg.weights_dir, "codecs"))}
                   for split, data in (("val", val), ("test", test))}
        if cfg.iw_samples:
            t0 = time.perf_counter()
            for split, data in (("val", val), ("test", test)):
                results[split]["iwae_nll"] = iwae_evaluate(model, data, device, cfg.iw_samples, seed=cfg.seed,
                                                          labels=model.conditional)
                results[split]["iw_samples"] = cfg.iw_samples
                if model.likelihood in DISCRETE:  # a bound on -log P(x) of the 8-bit image
                    results[split]["iwae_bits_per_dim"] = bits_per_dim(results[split]["iwae_nll"], data.x[0].numel())
            print(f"IWAE bound (-log p(x), nats/image), K={cfg.iw_samples}: {len(val) + len(test)} images "
                  f"in {time.perf_counter() - t0:.1f} s")
        if cfg.fid:
            classifier, accuracy = load_or_train_classifier(cfg.dataset_type, cfg.data_root, cfg.weights_dir,
                                                            device, data=data_options(cfg))
            scores = sample_scores(model, gmm, {"val": val, "test": test}, cfg.fid, cfg.seed, classifier, device)
            for split in results:
                results[split].update(scores[split], fid_classifier_test_accuracy=accuracy)
        print_eval_table(results)
        if cfg.disentanglement:
            results["disentanglement"] = disentanglement_report(model, cfg, device)
        path = os.path.join(cfg.weights_dir, f"{cfg.lognumber}_eval.json")
        try:
            write_json(path, results)
        except OSError as e:
            raise VaeLabError(f"could not write {path!r} ({e.strerror or e}); the previous file there is "
                              f"intact") from None
        print(f"wrote {path}")
        summary["eval"] = results
    if cfg.predict:
        out = os.path.join(cfg.results_dir, cfg.lognumber)
        try:
            summary["predict"] = write_predictions(model, val, test, out, device, cfg.seed,
                                                   train if cfg.predict_train else None,
                                                   gmm=gmm if cfg.sampler == "gmm" else None,
                                                   class_names=train.classes)
        except OSError as e:
            raise VaeLabError(f"could not write the predictions in {out!r} ({e.strerror or e})") from None
        print(f"wrote predictions to {out}/")
    return summary
