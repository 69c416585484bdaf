"""Sample-quality metrics: correct values, correct distributed behaviour, caches that never go stale."""

from __future__ import annotations

import json
import math
import time
import urllib.error
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from ganforge.datamodules.digits import DigitsDataModule
from ganforge.datamodules.image_folder import ImageFolderDataModule
from ganforge.errors import GanforgeError
from ganforge.metrics import features as features_module
from ganforge.metrics.evaluator import EVALUATORS, build_evaluator, choose_feature_network
from ganforge.metrics.features import INCEPTION_FILE, InceptionFeatures, classifier_features, to_uint8_rgb
from ganforge.metrics.sample_quality import (
    FEATURE_METRICS,
    ClassCoverage,
    ClassDiversity,
    PrecisionRecall,
    SampleQuality,
)
from ganforge.sampling import rank_range

D = 8  # feature dimension of the synthetic tests


def features(n: int, shift: float = 0.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(D, D, generator=g) / math.sqrt(D)
    return torch.randn(n, D, generator=g) @ mix + shift


def reference_fid(x: np.ndarray, y: np.ndarray) -> float:
    """FID from the definition, with SciPy's matrix square root (independent of torchmetrics)."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


OFF = {"kid": False, "inception_score": False, "precision_recall": False, "mifid": False}
OPTIONS = {
    "kid_subset_size": 50,
    "is_splits": 2,
    "seed": 0,
    "coverage_min_share": 0.1,
    "precision_recall_k": 3,
}


def quality(classes: int = 3, classifier: bool = False, **on: bool) -> SampleQuality:
    return SampleQuality.build(OFF | OPTIONS | on, D, classes, classifier)


def fid_of(real: torch.Tensor, fake: torch.Tensor) -> float:
    q = quality()
    q.set_reference(real, torch.zeros(len(real), 3))
    q.update(fake, torch.zeros(len(fake), 3))
    return q.compute()["fid"]


def test_fid_matches_scipy() -> None:
    real, fake = features(600, seed=1), features(400, shift=0.3, seed=2) * 1.2
    expected = reference_fid(real.double().numpy(), fake.double().numpy())
    assert fid_of(real, fake) == pytest.approx(expected, rel=1e-3)


def test_fid_zero_for_same_set_and_grows_with_shift() -> None:
    real = features(500, seed=3)
    assert abs(fid_of(real, real)) < 1e-3
    same_distribution = fid_of(real, features(500, seed=4))
    assert (
        same_distribution
        < fid_of(real, features(500, shift=0.5, seed=4))
        < fid_of(real, features(500, 2.0, 4))
    )


def test_sample_counts_the_metrics_cannot_use() -> None:
    q = SampleQuality.build(OFF | OPTIONS | {"kid": True, "kid_subset_size": 100}, D, 3, False)
    with pytest.raises(GanforgeError, match=r"FID needs at least 2 generated .* metrics.num_samples=1"):
        q.check_counts(1, 500)
    with pytest.raises(GanforgeError, match=r"metrics.kid_subset_size=100 .* more than the 50 available"):
        q.check_counts(50, 500)
    with pytest.raises(GanforgeError, match=r"metrics.is_splits=10 .* at least 20 samples"):
        SampleQuality.build(
            OFF | OPTIONS | {"inception_score": True, "is_splits": 10}, D, 3, False
        ).check_counts(15, 500)
    with pytest.raises(GanforgeError, match=r"precision_recall_k=3 .* metrics.precision_recall=false"):
        quality(precision_recall=True).check_counts(3, 500)


def test_each_metric_is_on_exactly_when_its_switch_says() -> None:
    assert list(quality().metrics) == ["fid"]
    assert list(quality(classifier=True).metrics) == ["fid", "coverage", "diversity", "class_accuracy"]
    every = quality(classifier=True, kid=True, inception_score=True, precision_recall=True, mifid=True)
    assert list(every.metrics) == list(FEATURE_METRICS)


def test_kid_and_is_are_reproducible_and_leave_the_global_rng_alone() -> None:
    def run() -> dict[str, float]:
        q = quality(kid=True, inception_score=True)
        q.set_reference(features(120, seed=5), torch.randn(120, 3))
        q.update(features(120, 0.2, seed=6), torch.randn(120, 3))
        return q.compute()

    torch.manual_seed(0)
    first = run()
    after = torch.rand(1)
    torch.manual_seed(0)
    assert run() == first
    assert torch.equal(torch.rand(1), after)  # compute() did not consume the global RNG
    assert first["kid"] > 0 and first["is"] >= 1.0


def test_class_coverage() -> None:
    cover = ClassCoverage(num_classes=10, coverage_min_share=0.1)
    labels = torch.arange(1000) % 10
    cover.set_reference(torch.zeros(1000, D), torch.nn.functional.one_hot(labels, 10).float(), 0, 1)
    cover.update(torch.zeros(500, D), torch.nn.functional.one_hot(labels[:500], 10).float(), None)
    result = cover.compute()
    assert result["classes_covered"] == 10 and result["class_kl"].item() == pytest.approx(0.0, abs=1e-12)

    cover.reset()  # keeps the real histogram, forgets generated samples
    collapsed = torch.zeros(500, dtype=torch.long)
    collapsed[:4] = 1  # a few strays are not coverage
    cover.update(torch.zeros(500, D), torch.nn.functional.one_hot(collapsed, 10).float(), None)
    result = cover.compute()
    assert result["classes_covered"] == 1
    p = torch.tensor([496 / 500, 4 / 500], dtype=torch.float64)
    assert result["class_kl"].item() == pytest.approx((p * (p / 0.1).log()).sum().item())


def test_class_diversity_is_within_class_spread_relative_to_real() -> None:
    diversity = ClassDiversity(num_classes=2, num_features=3)
    labels = torch.arange(400) % 2
    logits = torch.nn.functional.one_hot(labels, 2).float()
    real = torch.randn(400, 3, generator=torch.Generator().manual_seed(0)) + 5 * labels[:, None]
    diversity.set_reference(real, logits, 0, 1)
    diversity.update(real, logits, None)  # as varied as the data
    assert diversity.compute()["class_diversity"].item() == pytest.approx(1.0)

    diversity.reset()  # keeps the real statistics
    diversity.update(0.5 * real, logits, None)  # half the spread in every direction: 1/4
    assert diversity.compute()["class_diversity"].item() == pytest.approx(0.25)
    diversity.reset()
    one_per_class = 5 * labels[:, None].float().expand(-1, 3)  # the same image for every sample of a class
    diversity.update(one_per_class, logits, None)
    assert diversity.compute()["class_diversity"].item() == pytest.approx(0.0, abs=1e-9)


def test_precision_and_recall_see_realism_and_variety_apart() -> None:
    """Precision: generated samples inside the data's support; recall: the data inside theirs."""

    def gaussian(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
        return torch.randn(n, D, generator=torch.Generator().manual_seed(seed)) + shift

    real = gaussian(400, 7)
    pr = PrecisionRecall(precision_recall_k=3)
    pr.set_reference(real, torch.zeros(400, 3), 0, 1)

    def score(fake: torch.Tensor) -> dict[str, float]:
        pr.reset()
        pr.update(fake, torch.zeros(len(fake), 3), None)
        return {k: float(v) for k, v in pr.compute().items()}

    same = score(gaussian(400, 8))
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    collapsed = score(real[:40].repeat(10, 1) + 0.01 * gaussian(400, 9))  # realistic, not varied
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.2
    assert score(gaussian(400, 10, shift=4.0)) == {"precision": 0.0, "recall": 0.0}  # off the data


def test_mifid_penalises_copies_of_the_training_set() -> None:
    def gaussian(n: int, seed: int) -> torch.Tensor:
        return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))

    real, logits = gaussian(300, 11), torch.zeros(300, 3)
    q = quality(mifid=True)
    q.set_reference(real, logits)

    def score(fake: torch.Tensor) -> dict[str, float]:
        q.reset()
        q.update(fake, logits)
        return q.compute()

    fresh = score(gaussian(300, 12))  # new samples of the data's distribution: no penalty
    assert fresh["mifid"] == pytest.approx(fresh["fid"], rel=1e-6)
    copied = score(
        real + 1e-3 * gaussian(300, 13)
    )  # memorised: FID near 0, the worst generator for scarce data
    assert copied["fid"] < 1e-4 * fresh["fid"] and copied["mifid"] > fresh["mifid"]
    half = score(torch.cat([real[:150] + 1e-3 * gaussian(150, 14), gaussian(150, 15)]))
    assert half["fid"] < fresh["fid"] and half["mifid"] > 5 * fresh["mifid"]


def test_rank_ranges_tile_the_samples() -> None:
    assert [list(rank_range(10, r, 3)) for r in range(3)] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


# --- distributed: every rank computes, and the value is the single-process value ---------------------

EVERY = {"kid": True, "inception_score": True, "precision_recall": True, "mifid": True}


def _ddp_worker(
    rank: int, world_size: int, init_file: str, real, real_logits, fake: torch.Tensor, logits, out: str
) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    q = quality(4, classifier=True, **EVERY)
    q.set_reference(real, real_logits, rank, world_size)
    mine = rank_range(len(fake), rank, world_size)
    q.update(fake[mine.start : mine.stop], logits[mine.start : mine.stop], torch.arange(len(fake))[mine] % 4)
    result = q.compute()  # a collective: hangs (test timeout) if any rank skipped it
    Path(f"{out}.{rank}").write_text(json.dumps(result))
    dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_compute_equals_single_process(tmp_path: Path) -> None:
    real, fake = features(400, seed=9), features(301, 0.3, seed=10)
    real_logits, fake_logits = torch.randn(400, 4), torch.randn(301, 4)
    single = quality(4, classifier=True, **EVERY)
    single.set_reference(real, real_logits)
    single.update(fake, fake_logits, torch.arange(301) % 4)
    expected = single.compute()

    out = str(tmp_path / "result")
    args = (2, str(tmp_path / "init"), real, real_logits, fake, fake_logits, out)
    ctx = mp.spawn(_ddp_worker, args=args, nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for process in ctx.processes:
                process.kill()
            pytest.fail("distributed compute() hung: a rank did not take part in the collective")
    results = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(2)]
    assert results[0] == results[1]  # every rank reports the same values
    assert results[0].keys() == expected.keys()
    for name, value in expected.items():
        if name not in {"kid", "kid_std", "is", "is_std"}:  # these draw subsets of differently ordered sets
            assert results[0][name] == pytest.approx(value, rel=1e-6), name


# --- feature networks and caches ---------------------------------------------------------------------


SETTINGS = {
    "epochs": 3,
    "max_steps": None,
    "lr": 0.003,
    "batch_size": 64,
    "width": 16,
    "feature_dim": 16,
    "seed": 0,
    "train_split": "full",
}


def digits(**kwargs) -> DigitsDataModule:
    dm = DigitsDataModule(image_size=16, **kwargs)
    dm.setup()
    return dm


def test_classifier_is_trained_once_then_cached(tmp_path: Path) -> None:
    net = classifier_features(digits(), SETTINGS, str(tmp_path), torch.device("cpu"))
    assert 0.8 < net.test_accuracy <= 1.0  # 3 epochs on 16x16 digits: far above chance (0.1)
    with mock.patch.object(features_module, "fit_classifier", side_effect=AssertionError("retrained")):
        again = classifier_features(digits(), SETTINGS, str(tmp_path), torch.device("cpu"))
    assert again.id == net.id and again.test_accuracy == net.test_accuracy
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    assert torch.equal(again(x)[0], net(x)[0])
    # different data (another split) -> another classifier, never the stale one
    other = classifier_features(digits(split_seed=1), SETTINGS, str(tmp_path), torch.device("cpu"))
    assert other.id != net.id
    assert len(list((tmp_path / "classifiers").glob("*.pt"))) == 2


def metric_settings(cache: Path, **overrides) -> dict:
    base = {
        "feature_network": "classifier", "num_samples": 64, "num_reference": 300, "reference_split": "train",
        "batch_size": 64, "seed": 0, "kid": False, "kid_subset_size": 50, "inception_score": False,
        "is_splits": 2, "coverage_min_share": 0.1, "classifier": SETTINGS, "cache_dir": str(cache),
        "precision_recall": True, "precision_recall_k": 3, "mifid": False,
    }  # fmt: skip
    return base | overrides


def test_reference_statistics_cached_per_data_and_network(tmp_path: Path) -> None:
    dm = digits()
    rng = torch.get_rng_state()
    first = build_evaluator(metric_settings(tmp_path), dm, torch.device("cpu"))
    # first use (classifier trained, statistics computed) leaves training's RNG as a cached run does:
    # a seeded run must not depend on what the cache held
    assert torch.equal(torch.get_rng_state(), rng)
    refs = list((tmp_path / "reference").glob("*.pt"))
    assert len(refs) == 1 and first.protocol["reference samples"] == 300
    mtime = refs[0].stat().st_mtime_ns
    again = build_evaluator(metric_settings(tmp_path), dm, torch.device("cpu"))
    assert refs[0].stat().st_mtime_ns == mtime  # loaded, not recomputed
    assert torch.equal(torch.get_rng_state(), rng)
    same = again.quality.metrics["fid"].metric.real_features_sum
    assert torch.equal(same, first.quality.metrics["fid"].metric.real_features_sum)
    # another feature network (different classifier) or another split -> other statistics
    build_evaluator(
        metric_settings(tmp_path, classifier=SETTINGS | {"feature_dim": 8}), dm, torch.device("cpu")
    )
    build_evaluator(metric_settings(tmp_path, reference_split="test"), dm, torch.device("cpu"))
    names = sorted(p.name.split("_")[1] for p in (tmp_path / "reference").glob("*.pt"))
    assert names == ["test", "train", "train"]  # train x 2 networks, test x 1


def test_evaluate_real_images_scores_better_than_noise(tmp_path: Path) -> None:
    dm = digits()
    evaluator = build_evaluator(metric_settings(tmp_path, num_samples=200), dm, torch.device("cpu"))
    real_images = dm.data_test.tensors[0].float() / 127.5 - 1

    class Real:  # "generates" held-out real images
        latent_dim, num_classes = 4, None

        def generate(self, z: torch.Tensor, labels=None) -> torch.Tensor:
            return real_images[torch.randint(len(real_images), (len(z),))]

    class Noise(Real):
        def generate(self, z: torch.Tensor, labels=None) -> torch.Tensor:
            return torch.rand(len(z), 1, 16, 16) * 2 - 1

    good = evaluator.evaluate(Real(), torch.device("cpu"))
    bad = evaluator.evaluate(Noise(), torch.device("cpu"))
    # noise has none of the data's variety (recall); its features fall inside the data's wide
    # k-NN support, so precision does not tell them apart here
    assert good["fid"] < bad["fid"] / 5 and good["recall"] > 0.5 and bad["recall"] < 0.1
    assert good["classes_covered"] == 10 and good["class_kl"] < 0.1
    assert set(EVALUATORS) == {"classifier", "inception", "mixture"}


def test_invalid_protocol_settings(tmp_path: Path) -> None:
    dm = digits()
    with pytest.raises(GanforgeError, match=r"metrics.reference_split='dev' is unknown"):
        build_evaluator(metric_settings(tmp_path, reference_split="dev"), dm, torch.device("cpu"))
    with pytest.raises(GanforgeError, match=r"metrics.feature_network='vgg' is unknown"):
        build_evaluator(metric_settings(tmp_path, feature_network="vgg"), dm, torch.device("cpu"))
    with pytest.raises(GanforgeError, match=r"FID needs at least 2 generated"):
        build_evaluator(metric_settings(tmp_path, num_samples=1), dm, torch.device("cpu"))


# --- Inception: offline behaviour and the real loading path ---------------------------------------------


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return hub


def test_inception_offline_names_file_folder_and_alternative(torch_home: Path) -> None:
    with pytest.raises(GanforgeError) as err:
        InceptionFeatures()
    message = str(err.value)
    assert INCEPTION_FILE in message and str(torch_home / "checkpoints") in message
    assert "$TORCH_HOME/hub/checkpoints/" in message and "metrics=classifier" in message
    assert "\n" not in message


def write_random_inception_weights(path: Path) -> None:
    """An Inception-v3 state dict of the right shapes (random values), built without any download."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    with (
        mock.patch.object(fe, "load_state_dict_from_url", return_value={}),
        mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict"),
    ):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)


@pytest.mark.slow
def test_inception_features_from_a_local_weight_file(torch_home: Path) -> None:
    write_random_inception_weights(torch_home / "checkpoints" / INCEPTION_FILE)
    net = InceptionFeatures()
    images = torch.rand(2, 1, 32, 32) * 2 - 1  # grayscale, any size: resized to 299
    feats, logits = net(images)
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008)
    from torchmetrics.image.fid import NoTrainInceptionV3

    reference = NoTrainInceptionV3(
        "inception-v3-compat",
        ["2048", "logits_unbiased"],
        str(torch_home / "checkpoints" / INCEPTION_FILE),
        False,
    )
    want_feats, want_logits = reference._torch_fidelity_forward(to_uint8_rgb(images))
    assert torch.allclose(feats, want_feats, atol=1e-5) and torch.allclose(
        logits, want_logits, rtol=1e-4, atol=1e-3
    )
    assert not net.training and "legacy-resize" in net.id
    assert not net.net.use_antialias  # the published (TF1, non-antialiased) resize


def test_uint8_conversion_for_inception() -> None:
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 2, 2)
    out = to_uint8_rgb(x)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 2, 2)
    assert out[0, 0].flatten().tolist() == [0, 128, 255, 255]


def test_auto_picks_what_the_data_allows(
    tmp_path: Path, torch_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert choose_feature_network("auto", digits()) == "classifier"
    unlabelled = ImageFolderDataModule(str(tmp_path))  # no classes known: num_classes unset
    assert choose_feature_network("auto", unlabelled) == "none"
    assert "no sample-quality metrics" in caplog.text
    (torch_home / "checkpoints").mkdir(parents=True)
    (torch_home / "checkpoints" / INCEPTION_FILE).write_bytes(b"")
    assert choose_feature_network("auto", unlabelled) == "inception"


def test_classifier_needs_labels(tmp_path: Path) -> None:
    dm = ImageFolderDataModule(str(tmp_path))
    dm.num_classes = 1
    with pytest.raises(GanforgeError, match=r"metrics=classifier needs a labelled data set"):
        classifier_features(dm, SETTINGS, str(tmp_path), torch.device("cpu"))


def test_fingerprint_sees_content_changes() -> None:
    from ganforge.cache import fingerprint

    a = TensorDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(4))
    b = TensorDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(4))
    assert fingerprint(a) == fingerprint(b)
    b.tensors[0][0, 0, 0, 0] = 1
    assert fingerprint(a) != fingerprint(b)


def test_classifier_training_respects_max_steps(tmp_path: Path) -> None:
    from ganforge.metrics.classifier import SmallCNN, fit_classifier

    steps = []
    original = torch.optim.Adam.step
    with mock.patch.object(
        torch.optim.Adam, "step", lambda self, *a, **k: steps.append(1) or original(self, *a, **k)
    ):
        fit_classifier(
            SmallCNN(1, 10, 8, 16), digits().data_train, torch.device("cpu"), epochs=5, max_steps=7
        )
    assert len(steps) == 7  # 5 epochs would be 60 (12 batches of 128 each)
    with mock.patch.object(features_module, "fit_classifier") as fit:
        classifier_features(digits(), SETTINGS | {"max_steps": 42}, str(tmp_path), torch.device("cpu"))
    assert fit.call_args.kwargs["max_steps"] == 42 and fit.call_args.kwargs["epochs"] == SETTINGS["epochs"]
    assert fit.call_args.kwargs["progress"] == "metrics classifier"  # first use shows a progress bar


def test_the_progress_bar_follows_every_step_and_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import rich.progress

    from ganforge.metrics.classifier import SmallCNN, fit_classifier

    shown: list[float] = []
    original = rich.progress.Progress.advance
    monkeypatch.setattr(
        rich.progress.Progress, "advance", lambda self, task, n=1: shown.append(n) or original(self, task, n)
    )
    data, cpu = digits().data_train, torch.device("cpu")
    nets = []
    for progress in ("metrics classifier", None):
        torch.manual_seed(0)
        nets.append(
            fit_classifier(SmallCNN(1, 10, 8, 16), data, cpu, epochs=1, max_steps=5, progress=progress)
        )
    assert shown == [1] * 10  # one tick per optimizer step, in both runs (a hidden bar still counts)
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)
