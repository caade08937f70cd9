"""The shared training loop: schedules, checkpoints, resume, label checks, data parallelism."""

import os
import subprocess
import sys

import pytest
import torch
from confidently.adversarial import AdversarialPerturb, PGDConfig
from confidently.data.dataset import ImageDataset
from confidently.errors import InvalidInput
from confidently.models import create_model
from confidently.run import seed_everything
from confidently.training import Checkpoint, TrainConfig, make_optimizer, make_schedule, train_classifier
from safetensors.torch import save_file


@pytest.fixture(scope="module")
def small_digits(digits_tensors):
    (images, labels), _ = digits_tensors
    return images[:192], labels[:192]


def lrs(config: TrainConfig, steps_per_epoch: int = 10) -> list[float]:
    optimizer = make_optimizer(config.optimizer, [torch.nn.Parameter(torch.zeros(1))], config.lr, 0.0, 0.9)
    schedule = make_schedule(config, optimizer, steps_per_epoch)
    values = []
    for _ in range(config.epochs * steps_per_epoch):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return values


def test_schedules():
    cyclic = lrs(TrainConfig(epochs=10, lr=0.1, schedule="cyclic", peak_epoch=2, optimizer="sgd"))
    assert cyclic[0] == 0 and max(cyclic) == pytest.approx(0.1) and cyclic.index(max(cyclic)) == 20
    step = lrs(TrainConfig(epochs=9, lr=0.1, schedule="step", step_every=3, optimizer="sgd"))
    assert step[0] == pytest.approx(0.1) and step[30] == pytest.approx(0.01) and step[60] == pytest.approx(0.001)
    cosine = lrs(TrainConfig(epochs=4, lr=0.1, schedule="cosine", optimizer="sgd"))
    assert cosine[0] == pytest.approx(0.1) and cosine[-1] < 0.001


def train(images, labels, epochs, checkpoint=None, resume=False, eps=0.0):
    seed_everything(0, deterministic=True)
    model = create_model("tiny_resnet", 10)
    perturb = AdversarialPerturb(PGDConfig.training("l2", eps, random_start=True)) if eps else None
    config = TrainConfig(epochs=epochs, lr=3e-3, batch_size=32, shift=2, optimizer="sgd", schedule="onecycle")
    train_set = ImageDataset.from_tensors(images, labels)
    return train_classifier(model, train_set, config, perturb=perturb, checkpoint=checkpoint, resume=resume)


def test_resume_after_a_kill_equals_an_uninterrupted_run(small_digits, tmp_path):
    images, labels = small_digits
    whole = train(images, labels, 3, eps=0.5)
    checkpoint = tmp_path / "run.ckpt"

    class Killed(Exception):
        pass

    def kill_after_two(metrics):
        if metrics["epoch"] == 2:
            raise Killed

    seed_everything(0, deterministic=True)
    model = create_model("tiny_resnet", 10)
    config = TrainConfig(epochs=3, lr=3e-3, batch_size=32, shift=2, optimizer="sgd", schedule="onecycle")
    with pytest.raises(Killed):
        train_set = ImageDataset.from_tensors(images, labels)
        train_classifier(model, train_set, config, checkpoint=checkpoint, on_epoch=kill_after_two,
                         perturb=AdversarialPerturb(PGDConfig.training("l2", 0.5, random_start=True)))
    resumed = train(images, labels, 3, checkpoint=checkpoint, resume=True, eps=0.5)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_adversarial_training_measures_clean_accuracy_without_changing_the_training(small_digits):
    """train_nat_acc costs a forward per batch, in training mode (batch norm's batch statistics, dropout), and
    the weights come out bit for bit what they are without it."""
    images, labels = small_digits
    attack = AdversarialPerturb(PGDConfig.training("l2", 0.5, random_start=True))

    def unmeasured(model, batch, target, generator):
        return attack(model, batch, target, generator)  # the same attack, without the ``adversarial`` flag

    runs = []
    for perturb in (attack, unmeasured):
        seed_everything(0, deterministic=True)
        model, seen = create_model("tiny_vit", 10, depth=1), []
        model.net.pos_drop.p = 0.2  # a random draw in every training forward
        train_classifier(model, ImageDataset.from_tensors(images[:96], labels[:96]),
                         TrainConfig(epochs=2, batch_size=32, shift=2), perturb=perturb, on_epoch=seen.append)
        runs.append((model.state_dict(), seen))
    (measured, metrics), (plain, plain_metrics) = runs
    for name, value in measured.items():
        assert torch.equal(value, plain[name]), name
    assert [m["loss"] for m in metrics] == [m["loss"] for m in plain_metrics]
    for m in metrics:
        assert m["train_adv_acc"] == m["train_acc"] and 0 <= m["train_nat_acc"] <= 1
    assert all("train_nat_acc" not in m and "train_adv_acc" not in m for m in plain_metrics)
    resnet = create_model("tiny_resnet", 10)
    seen = []
    train_classifier(resnet, ImageDataset.from_tensors(images[:64], labels[:64]), TrainConfig(epochs=1, batch_size=32),
                     perturb=attack, on_epoch=seen.append)
    assert "train_nat_acc" in seen[0] and int(resnet.net.bn1.num_batches_tracked) == 2  # one update per batch


def test_checkpoint_is_safetensors_with_optimizer_state(small_digits, tmp_path):
    images, labels = small_digits
    train(images, labels, 1, checkpoint=tmp_path / "c.ckpt")
    from confidently.io.artifacts import load_artifact

    tensors, meta = load_artifact(tmp_path / "c.ckpt")
    assert meta["epoch"] == 1 and any(k.startswith("optim.") for k in tensors) and "rng.torch" in tensors
    with pytest.raises(InvalidInput):
        save_file({"x": torch.zeros(1)}, tmp_path / "other.ckpt")
        Checkpoint(tmp_path / "other.ckpt").load(create_model("tiny_resnet", 10), None)


def test_a_batch_of_one_row_does_not_stop_batch_norm_training():
    """9 images in batches of 8 leave a last batch of one, which batch norm cannot train on: it is passed over."""
    torch.manual_seed(0)
    model = create_model("tiny_resnet", 3, img_size=16)
    data = ImageDataset.from_tensors(torch.rand(9, 3, 16, 16), torch.arange(9) % 3)
    seen = []
    train_classifier(model, data, TrainConfig(epochs=1, batch_size=8), on_epoch=seen.append)
    assert len(seen) == 1 and seen[0]["loss"] > 0


def test_labels_outside_the_model_classes(small_digits):
    images, labels = small_digits
    with pytest.raises(InvalidInput, match="--num-classes"):
        train_set = ImageDataset.from_tensors(images, labels)
        train_classifier(create_model("tiny_resnet", 5), train_set, TrainConfig(epochs=1))


DDP_SCRIPT = r"""
import os, sys, torch
torch.set_num_threads(1)
from confidently.training import TrainConfig, train_classifier, init_distributed_from_env
from confidently.models import create_model, save_model
from confidently.adversarial import AdversarialPerturb, PGDConfig
from confidently.data import open_dataset
from confidently.data.dataset import ImageDataset
from confidently.data.loader import collect
ranks = init_distributed_from_env()
images, labels = collect(open_dataset("demo:digits", "train"))
images, labels = images[:96], labels[:96]
torch.manual_seed(0)
model = create_model("tiny_vit", 10, depth=1)
log = []
config = TrainConfig(epochs=2, lr=1e-3, batch_size=32, shift=2)
train_classifier(model, ImageDataset.from_tensors(images, labels), config,
                 perturb=AdversarialPerturb(PGDConfig.training("l2", 0.5)), on_epoch=log.append)
if ranks.is_main:
    save_model(model, sys.argv[1], training={"epochs_logged": len(log)})
torch.save  # noqa
"""


@pytest.mark.slow
def test_ddp_on_two_gloo_processes_matches_one_process(tmp_path):
    """A LayerNorm ViT sees the same gradients whether a batch is split over 2 ranks or not."""
    from confidently.io.model_files import read_model_file

    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    ddp = subprocess.run([*torchrun, str(script), str(tmp_path / "ddp.safetensors")], capture_output=True,
                         text=True, env=env, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "one.safetensors")], capture_output=True,
                            text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    a, meta = read_model_file(tmp_path / "ddp.safetensors")
    b, _ = read_model_file(tmp_path / "one.safetensors")
    assert meta["training"]["epochs_logged"] == 2  # rank 0 logged and wrote once
    start = create_model("tiny_vit", 10, depth=1)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=2e-5), key
    moved = [k for k in a if k.startswith("net.") and not torch.equal(a[k], torch.manual_seed(0) and
                                                                         start.state_dict()[k])]
    assert moved  # it trained


class _LinearNet(torch.nn.Module):
    """No batch norm, no dropout: split and whole batches give the same update. Past ``limit`` rows a forward
    raises CUDA's out-of-memory error, as a GPU that cannot hold the batch would."""

    def __init__(self, limit: int | None = None):
        super().__init__()
        self.fc = torch.nn.Linear(3 * 8 * 8, 10)
        self.limit, self.refused = limit, 0

    def forward(self, images):
        if self.limit is not None and len(images) > self.limit:
            self.refused += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.fc(images.flatten(1))


def test_an_out_of_memory_step_is_redone_in_micro_batches_with_the_same_update(small_digits, capsys):
    """Batches of 24 on a 'GPU' that holds 8 rows: the first step fails at 24 and 12 rows, runs as 4 parts of 6
    and every later step goes straight to them (two refusals in all, one message each); the weights equal an
    unsplit run's, the per-record PGD starts included."""
    images = torch.nn.functional.interpolate(small_digits[0][:96], size=8)
    data = ImageDataset.from_tensors(images, small_digits[1][:96])
    config = TrainConfig(epochs=2, lr=0.05, batch_size=24, optimizer="sgd", schedule="constant", shift=1)
    perturb = AdversarialPerturb(PGDConfig.training("l2", 0.5, random_start=True))
    runs = []
    for limit in (None, 8):
        torch.manual_seed(0)
        model = _LinearNet(limit)
        train_classifier(model, data, config, perturb=perturb)
        runs.append(model)
    whole, split = runs
    assert split.refused == 2
    assert capsys.readouterr().err.count("micro-batches") == 2  # 2, then 4 parts (3 of 8 rows)
    for a, b in zip(whole.parameters(), split.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert not torch.equal(whole.fc.weight, _LinearNet().fc.weight)


def test_sync_batch_norm_only_under_torchrun_on_gpus():
    from confidently.errors import UsageError
    from confidently.training import Distributed, sync_batch_norm

    model = create_model("tiny_resnet", 10)
    keys = list(model.state_dict())
    assert sync_batch_norm(model, Distributed(0, 1), torch.device("cpu")) is model
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())  # one process: unchanged
    with pytest.raises(UsageError, match="CUDA"):
        sync_batch_norm(model, Distributed(0, 2, True), torch.device("cpu"))
    converted = sync_batch_norm(model, Distributed(0, 2, True), torch.device("cuda"))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules())
    assert not any(type(m) is torch.nn.BatchNorm2d for m in converted.modules())
    assert list(converted.state_dict()) == keys  # the model file is the same


UNEVEN_DDP_SCRIPT = r"""
import sys, torch
torch.set_num_threads(1)
from confidently.data import open_dataset
from confidently.data.dataset import ImageDataset
from confidently.data.loader import StreamLoader, collect
from confidently.data.preprocess import DataConfig, make_preprocess
from confidently.fit import validation_accuracy
from confidently.models import create_model, save_model
from confidently.training import TrainConfig, init_distributed_from_env, train_classifier
ranks = init_distributed_from_env()
images, labels = collect(open_dataset("demo:digits", "train"))
torch.manual_seed(0)
model = create_model("tiny_resnet", 10)
val = StreamLoader(ImageDataset.from_tensors(images[100:145], labels[100:145]),
                   make_preprocess("eval", DataConfig.of(model)), batch_size=8, rank=ranks.rank, world=ranks.world)
log = []
train_classifier(model, ImageDataset.from_tensors(images[:67], labels[:67]),
                 TrainConfig(epochs=2, lr=0.01, batch_size=32, optimizer="sgd"), forward=lambda m, x: m(x),
                 evaluate=lambda m, epoch: validation_accuracy(m, val), on_epoch=log.append)
if ranks.is_main:
    save_model(model, sys.argv[1], training={"val_acc": [m["val_acc"] for m in log]})
"""


@pytest.mark.slow
def test_ddp_with_uneven_parts_a_custom_forward_and_split_validation(tmp_path):
    """67 rows on 2 gloo ranks in batches of 16: rank 1's last batch is one row, which batch norm cannot train
    on, so it takes part in rank 0's last step at weight 0 instead of leaving it waiting; a custom forward runs
    under DDP; each rank validates half of the 45 validation rows with rank 0's model, and the summed figure
    equals one process scoring the written model on all of them."""
    from confidently.data import open_dataset
    from confidently.data.loader import StreamLoader, collect
    from confidently.data.preprocess import DataConfig, make_preprocess
    from confidently.evaluation import clean_accuracy
    from confidently.models import load_model

    script = tmp_path / "uneven.py"
    script.write_text(UNEVEN_DDP_SCRIPT)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    ddp = subprocess.run([*torchrun, str(script), str(tmp_path / "m.safetensors")], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    model = load_model(tmp_path / "m.safetensors")
    logged = model.training_info["val_acc"]
    assert len(logged) == 2
    images, labels = collect(open_dataset("demo:digits", "train"))
    val = StreamLoader(ImageDataset.from_tensors(images[100:145], labels[100:145]),
                       make_preprocess("eval", DataConfig.of(model)), batch_size=45)
    assert clean_accuracy(model, val, 10) == pytest.approx(logged[-1], abs=1e-12)
