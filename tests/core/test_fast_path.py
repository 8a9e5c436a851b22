"""The fast path (issue #14) against the plain reference: same step, same resume, same divergence.

On the CPU the fast path is compiled (inductor), fp32, foreach Adam and EMA, padded attention
(flash kernel), losses read back only when reported. Compiling even the tiny networks takes
tens of seconds here (minutes with a cold inductor cache), so one fast trainer is shared.
"""

import pytest
import torch

from sagan_core.checkpoint import load_checkpoint
from sagan_core.config import ConfigError, TrainConfig
from sagan_core.flops import step_flops
from sagan_core.layers import SelfAttention, sdpa_backends
from sagan_core.trainer import DivergedError, Trainer, TrainerCallbacks


def tiny_config(path: str, **overrides) -> TrainConfig:
    fields = dict(
        dataset="digits", resolution=32, g_ch=2, d_ch=2, z_dim=8, batch_size=4, steps=4,
        log_every=2, checkpoint_every=2, sample_every=0, ema_start=1, ema_decay=0.9,
        variety_every=0, device="cpu", seed=3, path=path,
    )  # fmt: skip
    fields.update(overrides)
    return TrainConfig(**fields)


@pytest.fixture(scope="module")
def fast(tmp_path_factory) -> Trainer:
    """One fast trainer for the module: its compiled G and D are compiled once."""
    return Trainer(tiny_config("fast"), tmp_path_factory.mktemp("fast"))


def grads(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in net.parameters()])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def test_path_is_a_config_field_and_defaults_to_plain_on_cpu(tmp_path):
    assert TrainConfig(path=None).validate().path is None
    with pytest.raises(ConfigError) as e:
        TrainConfig(path="quick").validate()
    assert e.value.field == "path"
    t = Trainer(tiny_config(None), tmp_path)
    assert t.path == t.config.path == "plain" and t.G_step is t.G


def test_padded_attention_has_the_same_logits_and_output_as_plain_attention():
    torch.manual_seed(0)
    attn = SelfAttention(32)
    with torch.no_grad():
        attn.gamma.fill_(0.7)
    x = torch.randn(3, 32, 8, 8)
    out_map, amap = attn.forward_with_map(x)  # the written-out softmax(q k^T) v
    plain = attn(x)
    attn.pad_qk = True
    padded = attn(x)
    torch.testing.assert_close(padded, out_map, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, out_map, rtol=1e-5, atol=1e-5)
    q, k, v = attn._qkv(x)
    qp, kp = (torch.nn.functional.pad(t, (0, v.shape[-1] - q.shape[-1])) for t in (q, k))
    torch.testing.assert_close(qp @ kp.transpose(1, 2), q @ k.transpose(1, 2))  # logits
    # Unequal widths leave only the unfused math kernel; padded, the flash kernel takes them.
    assert sdpa_backends(q[:, None], k[:, None], v[:, None]) == ["math"]
    assert sdpa_backends(qp[:, None], kp[:, None], v[:, None].contiguous())[0] == "flash"


def test_fast_step_equals_the_plain_step_from_identical_weights_and_inputs(tmp_path, fast):
    plain = Trainer(tiny_config("plain"), tmp_path)
    assert isinstance(fast.G_step, torch._dynamo.eval_frame.OptimizedModule)
    assert fast.opt_d.defaults["foreach"] and not plain.opt_d.defaults["foreach"]
    fast.G.load_state_dict(plain.G.state_dict())
    fast.D.load_state_dict(plain.D.state_dict())
    fast.data_gen.set_state(plain.data_gen.get_state())
    torch.manual_seed(1)
    ref = plain.train_step()
    torch.manual_seed(1)
    got = fast.train_step()
    assert ref.keys() == got.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-5)
    for net in ("G", "D"):
        assert rel(grads(getattr(fast, net)), grads(getattr(plain, net))) < 1e-5, net
    # Work is counted on meta copies for the fast path: the same count as the real step's.
    from torch.utils.flop_counter import FlopCounterMode

    plain.D.load_state_dict(fast.D.state_dict())
    with FlopCounterMode(display=False) as counter:
        plain.train_step()
    assert step_flops(plain.config) == counter.get_total_flops()


def test_the_fast_path_is_channels_last_on_the_cpu_too_and_cuda_graphs_are_a_no_op_there(
    tmp_path, fast
):
    # oneDNN's convolutions are faster on NHWC (x1.2 eager at paper widths, 32 px, batch 64).
    for net in (fast.G, fast.D, fast.G_ema):
        convs = [p for p in net.parameters() if p.dim() == 4 and p.shape[-1] > 1]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    x = fast.G(torch.randn(4, 8), torch.zeros(4, dtype=torch.long))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert Trainer(tiny_config("plain"), tmp_path / "p").channels_last is False
    graphs = Trainer(tiny_config("fast", cuda_graphs=True), tmp_path / "g")
    assert graphs.channels_last and not graphs.cuda_graphs  # reduce-overhead only on CUDA


def test_compiled_networks_have_no_graph_breaks_and_a_second_step_does_not_recompile(fast):
    fast.train_step()  # compiled already (or now): every variant a step needs
    with torch._dynamo.config.patch(error_on_recompile=True):
        fast.train_step()
    z, y = torch.randn(4, 8), torch.zeros(4, dtype=torch.long)
    assert torch._dynamo.explain(fast.G)(z, y).graph_break_count == 0
    x = torch.randn(8, 3, 32, 32)
    assert torch._dynamo.explain(fast.D)(x, torch.zeros(8, dtype=torch.long)).graph_break_count == 0


def test_a_class_warmup_does_not_recompile_the_compiled_d_at_each_step(fast):
    # D's projection weight changes every warm-up step: a buffer the graph reads, not a constant.
    fast.config.class_warmup, step = 10, fast.step
    try:
        fast.train_step()  # every variant a step needs compiled (no_grad and grad G calls)
        fast.step += 1
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(2):  # the weight moves from 0.2 to 0.3: the same graphs
                fast.train_step()
                fast.step += 1
        assert float(fast.D.class_weight) == pytest.approx((step + 3) / 10)
    finally:
        fast.config.class_warmup = 0
        fast.D.class_weight.fill_(1.0)
        fast.step = step


def weights(path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(path)
    return {f"{net}.{k}": v for net in ("G", "D", "G_ema") for k, v in ckpt[net].items()}


def test_fast_path_resumes_bit_exact(tmp_path, fast):
    # As plain's test: deterministic kernels (inductor's CPU embedding backward otherwise adds
    # in a thread-dependent order, so two uninterrupted runs differ in the last bits too).
    torch.use_deterministic_algorithms(True)
    try:
        full = Trainer(tiny_config("fast"), tmp_path / "full").run()
        half = Trainer(tiny_config("fast", steps=2), tmp_path / "half").run()
        resumed = Trainer(tiny_config("fast"), tmp_path / "resumed").run(
            resume_from=half.last_checkpoint
        )
    finally:
        torch.use_deterministic_algorithms(False)
    a, b = weights(full.last_checkpoint), weights(resumed.last_checkpoint)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    opt_a, opt_b = load_checkpoint(full.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    assert torch.equal(opt_a["opt_d"]["state"][0]["exp_avg"], opt_b["opt_d"]["state"][0]["exp_avg"])
    assert load_checkpoint(full.last_checkpoint)["config"]["path"] == "fast"


class PoisonAt(TrainerCallbacks):
    """Poisons a D weight with NaN just before the given step runs; notes the metrics."""

    def __init__(self, trainer, step):
        self.trainer, self.step, self.logged = trainer, step, []

    def should_stop(self, step):
        if step == self.step - 1:
            with torch.no_grad():
                self.trainer.D.linear.parametrizations.weight.original.fill_(float("nan"))
        return False

    def on_metrics(self, step, metrics):
        self.logged.append(step)


def test_a_non_finite_loss_is_raised_at_the_next_read_naming_its_step(tmp_path, fast):
    # Read every 4 steps (no checkpoint between): step 2 diverges, step 4's read says so.
    t = Trainer(tiny_config("fast", steps=6, log_every=4, checkpoint_every=0), tmp_path)
    t.callbacks = poison = PoisonAt(t, step=2)
    with pytest.raises(DivergedError, match="step 2") as e:
        t.run()
    assert e.value.step == 2 and t.step == 4 and poison.logged == []
    assert "d_loss=nan" in str(e.value)
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())


NO_COMPILER_RUN = """
import json, sys
from sagan_core.config import TrainConfig
from sagan_core.trainer import Trainer, TrainerCallbacks

class Notes(TrainerCallbacks):
    def __init__(self):
        self.notes = []
    def on_note(self, step, message):
        self.notes.append([step, message])

notes = Notes()
cfg = TrainConfig(**json.loads(sys.argv[1]))
trainer = Trainer(cfg, sys.argv[2], callbacks=notes)
result = trainer.run()
print(json.dumps({"step": result.step, "notes": notes.notes, "error": trainer.compile_error,
                  "compiled": hasattr(trainer.G_step, "_orig_mod")}))
"""


def test_without_a_c_compiler_the_fast_path_trains_uncompiled_and_says_why(tmp_path):
    """A machine without a compiler (a CUDA runtime image, #26): the job trains on, not fails."""
    import json
    import os
    import subprocess
    import sys

    fields = {k: v for k, v in tiny_config("fast", steps=2).to_dict().items() if v is not None}
    env = {
        **os.environ,
        "CXX": "/nonexistent/g++",
        "CC": "/nonexistent/gcc",
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),  # nothing compiled before
    }
    out = subprocess.run(
        [sys.executable, "-c", NO_COMPILER_RUN, json.dumps(fields), str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads(out.stdout.strip().splitlines()[-1])
    assert run["step"] == 2 and run["compiled"] is False
    assert "compiler" in run["error"].lower()
    # (the other note: the augmentation the trainer chose for the data set's size)
    [(step, note)] = [(s, n) for s, n in run["notes"] if not n.startswith("augmentation")]
    assert step == 0 and note.startswith("torch.compile failed on this machine")
