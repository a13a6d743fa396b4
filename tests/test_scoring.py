import numpy as np
import pytest
import torch

from bench.nn.scoring import (
    csi_scores,
    fit_gaussians,
    mahalanobis,
    max_cosine_times_norm,
    sei_combine,
)


def test_sei_matches_direct_numpy():
    rng = np.random.default_rng(0)
    d, n_classes, views = 4, 2, 8
    rots = [v // 2 for v in range(views)]  # (rotation, flip) pairs, as MCL's 8-way views
    train = rng.normal(size=(60, d))
    joint = rng.integers(0, n_classes * 4, size=60)
    joint[: n_classes * 4 * 3] = np.repeat(np.arange(n_classes * 4), 3)  # every label present
    test = rng.normal(size=(5, views, d))
    ridge = 0.01

    means, whiteners = fit_gaussians(torch.tensor(train), torch.tensor(joint), n_classes * 4, ridge)
    dist = torch.stack([mahalanobis(torch.tensor(test[:, v]), means, whiteners)
                        [:, rots[v] * n_classes:(rots[v] + 1) * n_classes] for v in range(views)], 1)

    for method in ("wa", "mean", "min"):
        score, pred = sei_combine(dist, method)
        for i in range(5):
            per_class = []
            for c in range(n_classes):
                ds = []
                for v in range(views):
                    x = train[joint == c + n_classes * rots[v]]
                    cov = np.cov(x, rowvar=False)
                    cov = cov + ridge * np.mean(np.diag(cov)) * np.eye(d)
                    delta = test[i, v] - x.mean(0)
                    ds.append(np.sqrt(delta @ np.linalg.inv(cov) @ delta))
                ds = np.array(ds)
                if method == "wa":
                    w = 1 / ds
                    per_class.append(np.sum(w * ds) / np.sum(w))
                elif method == "mean":
                    per_class.append(ds.sum())
                else:
                    per_class.append(ds.min())
            assert score[i].item() == pytest.approx(min(per_class), rel=1e-6)
            assert pred[i].item() == int(np.argmin(per_class))


def test_csi_score_matches_direct_computation():
    rng = np.random.default_rng(1)
    K, M, N, d = 4, 7, 5, 3
    train_z = rng.normal(size=(K, M, d))
    train_s = rng.normal(size=(K, M, K)) + 3.0  # positive mean logits, as after training
    test_z = rng.normal(size=(K, N, d))
    test_s = rng.normal(size=(K, N, K))
    full, sim = csi_scores(*(torch.tensor(a) for a in (test_z, test_s, train_z, train_s)))
    for i in range(N):
        total_sim = total = 0.0
        for k in range(K):
            axis = train_z[k] / np.linalg.norm(train_z[k], axis=1, keepdims=True)
            w_sim = 1 / np.mean(np.linalg.norm(train_z[k], axis=1))
            w_shi = 1 / np.mean(train_s[k][:, k])
            s = max(test_z[k, i] @ axis[m] for m in range(M)) * w_sim
            total_sim += s
            total += s + test_s[k, i, k] * w_shi
        assert full[i].item() == pytest.approx(total / K, rel=1e-6)
        assert sim[i].item() == pytest.approx(total_sim / K, rel=1e-6)


def test_cosine_times_norm():
    bank = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    z = torch.tensor([[2.0, 0.0], [3.0, 3.0]])
    got = max_cosine_times_norm(z, bank)
    assert got.tolist() == pytest.approx([2.0, np.sqrt(0.5) * np.sqrt(18)])


def test_fit_gaussians_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        fit_gaussians(torch.randn(3, 2), torch.tensor([0, 0, 1]), 2, 0.01)


def test_simclr_score_is_cosine_times_norm_of_the_ensemble_mean():
    """CSI's simclr score: T augmented samples averaged on both sides, then max cos x norm."""
    from bench.datasets import load_dataset
    from bench.nn.context import FitContext
    from helpers import tiny

    data = load_dataset("synthetic", "train")
    det = tiny("simclr", ens_samples=3, epochs=1).fit(data, FitContext(progress=False))
    test = data.images[:5]
    torch.manual_seed(7)
    z = det.mean_projection(test).numpy()
    torch.manual_seed(7)
    scores = det.score(test)
    got, cos_only = scores["cosnorm"], scores["cos"]
    bank = det.bank_.numpy()
    assert np.allclose(np.linalg.norm(bank, axis=1), 1, atol=1e-5)
    for i in range(len(test)):
        cos = bank @ z[i] / np.linalg.norm(z[i])
        assert got[i] == pytest.approx(-cos.max() * np.linalg.norm(z[i]), rel=1e-5)
        assert cos_only[i] == pytest.approx(-cos.max(), rel=1e-5)
    torch.manual_seed(7)
    single = det.forward(test, lambda u8: u8.float() / 255)["z"]
    assert not torch.allclose(single, torch.tensor(z), atol=1e-4)  # the views are augmented


def test_gaussian_whiteners_give_the_precision_and_float32_distances_agree():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(40, 3)) @ np.array([[2.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]])
    labels = np.repeat([0, 1], 20)
    ridge = 0.01
    means, whiteners = fit_gaussians(torch.tensor(z), torch.tensor(labels), 2, ridge)
    test = rng.normal(size=(6, 3))
    for label in range(2):
        x = z[labels == label]
        cov = np.cov(x, rowvar=False)
        precision = np.linalg.inv(cov + ridge * np.mean(np.diag(cov)) * np.eye(3))
        w = whiteners[label].numpy()
        assert np.allclose(w @ w.T, precision, rtol=1e-9, atol=1e-12)
        delta = test - x.mean(0)
        expected = np.sqrt(np.einsum("nd,de,ne->n", delta, precision, delta))
        got64 = mahalanobis(torch.tensor(test), means, whiteners)[:, label].numpy()
        got32 = mahalanobis(torch.tensor(test, dtype=torch.float32), means, whiteners)[:, label]
        assert np.allclose(got64, expected, rtol=1e-12)
        assert np.allclose(got32.numpy(), expected, rtol=1e-5)


def test_ensemble_mean_averages_every_key_over_the_draws():
    from helpers import tiny

    draws = iter([{"z": torch.tensor([1.0, 2.0]), "shift": torch.tensor(4.0)},
                  {"z": torch.tensor([3.0, 0.0]), "shift": torch.tensor(0.0)},
                  {"z": torch.tensor([2.0, 1.0]), "shift": torch.tensor(2.0)}])
    got = tiny("csi").ensemble_mean(3, lambda: next(draws))
    assert got["z"].tolist() == pytest.approx([2.0, 1.0])
    assert got["shift"].item() == pytest.approx(2.0)


def test_dn2s_score_is_the_sum_of_squared_distances_to_the_k_nearest():
    """knn with method sum-squares: DN2's official score (faiss IndexFlatL2, summed), by hand."""
    import numpy as np

    from bench.methods.classical import KNN, KNNConfig

    bank = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    det = KNN(KNNConfig(n_neighbors=2, method="sum-squares")).fit_array(bank, seed=0)
    got = det.score_array(np.array([[0.0, 0.0], [3.0, 4.0]]))
    assert got.tolist() == [0 + 9, 9 + 16]  # (0, 3) and (3, 4): squared, summed
    mean = KNN(KNNConfig(n_neighbors=2, method="mean")).fit_array(bank, seed=0)
    assert mean.score_array(np.array([[3.0, 4.0]])).tolist() == [3.5]  # PyOD's mean of (3, 4)


def test_mcl_scores_predicts_and_adds_post_hoc_scores_from_one_pass_of_its_views():
    """Labeled MCL: scoring the test set, predicting its classes and its post-hoc scores read
    the 8 views' forward passes once (the plain view's features included), and give what a
    fresh computation gives."""
    import numpy as np

    from bench.datasets import load_dataset
    from bench.methods.mcl import MCL, MCLConfig
    from bench.nn.context import FitContext

    train = load_dataset("synthetic", "train")
    test = load_dataset("synthetic", "test")
    det = MCL(MCLConfig(backbone="resnet-tiny", epochs=1, batch_size=32, max_train_samples=64,
                        proj_hidden=16, proj_dim=8, sei_views=8))
    det.fit(train, FitContext(progress=False, labeled=True))
    calls = []
    forward = det.forward

    def counted(images, transform, keys=("z",)):
        calls.append(keys)
        return forward(images, transform, keys)

    det.forward = counted
    scores = det.score(test.images)
    predicted = det.predict_class(test.images)
    assert len(calls) == 8  # the 8 views, once; features came with the plain view
    fresh = MCL(det.config)
    fresh.__dict__.update({k: v for k, v in det.__dict__.items() if k not in ("_memo", "forward")})
    again = fresh.score(test.images)
    for name in scores:
        assert np.allclose(scores[name], again[name], rtol=1e-5, atol=1e-5), name
    assert np.array_equal(predicted, fresh.predict_class(test.images))
