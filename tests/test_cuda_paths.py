"""CUDA-only behaviour, tested on CPU by simulating what differs: device per LOCAL_RANK and the order of set_device and
init_process_group, native-bf16 detection, backend switches, per-device RNG state, the CPU forms kept off other
devices (model.impl), pretrained-backbone reports, the memory-lean norm and gradient checkpointing."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.distributed as dist

from pdfnet import device as devices
from pdfnet.build import build_model, implementation_of
from pdfnet.config import ModelConfig
from pdfnet.depth.anything import depth_autocast_dtype
from pdfnet.engine import distributed
from pdfnet.engine.rng import capture_rng, restore_rng
from pdfnet.lean import decoder as lean_decoder
from pdfnet.models import PDFNet
from pdfnet.models.backbone import SWIN_SPECS, SwinEncoder
from pdfnet.models.blocks import ConvNormAct, RMSNorm
from pdfnet.models.pretrained import load_pretrained_swin as load_pretrained_backbone


@pytest.fixture()
def fake_gpus(monkeypatch):
    """Two visible 'GPUs': CUDA calls that would need a driver are recorded instead."""
    calls: list[tuple] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", torch.device(d))))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group",
                        lambda backend, **kw: calls.append(("init_process_group", backend, kw.get("device_id"))))
    return calls


def _torchrun_env(monkeypatch, rank: int, local_rank: int, world: int = 2) -> None:
    for name, value in (("WORLD_SIZE", world), ("RANK", rank), ("LOCAL_RANK", local_rank)):
        monkeypatch.setenv(name, str(value))


def test_each_rank_sets_its_own_gpu_then_joins_with_that_indexed_device(fake_gpus, monkeypatch):
    _torchrun_env(monkeypatch, rank=1, local_rank=1)
    ctx, device = distributed.init_distributed("cuda")
    assert (ctx.rank, ctx.world_size, ctx.local_rank) == (1, 2, 1) and device == torch.device("cuda", 1)
    assert fake_gpus == [("set_device", torch.device("cuda", 1)),
                         ("init_process_group", "nccl", torch.device("cuda", 1))]
    fake_gpus.clear()
    _torchrun_env(monkeypatch, rank=3, local_rank=0, world=4)  # second node: RANK != LOCAL_RANK
    ctx, device = distributed.init_distributed("auto")
    assert ctx.rank == 3 and device == torch.device("cuda", 0) and fake_gpus[0] == ("set_device", device)


def test_launch_mistakes_on_gpus_are_refused_with_the_way_out(fake_gpus, monkeypatch):
    _torchrun_env(monkeypatch, rank=1, local_rank=1)
    with pytest.raises(distributed.DistributedSetupError, match="use 'cuda'"):
        distributed.init_distributed("cuda:0")
    _torchrun_env(monkeypatch, rank=2, local_rank=2, world=3)
    with pytest.raises(distributed.DistributedSetupError, match="--nproc_per_node 2"):
        distributed.init_distributed("cuda")
    assert fake_gpus == []  # nothing was joined


def test_cpu_processes_join_with_gloo_and_a_single_process_joins_nothing(fake_gpus, monkeypatch):
    _torchrun_env(monkeypatch, rank=1, local_rank=1)
    _, device = distributed.init_distributed("cpu")
    assert device == torch.device("cpu") and fake_gpus == [("init_process_group", "gloo", None)]
    fake_gpus.clear()
    monkeypatch.setenv("WORLD_SIZE", "1")
    ctx, device = distributed.init_distributed("cuda")
    assert not ctx.enabled and device == torch.device("cuda", 0) and fake_gpus == []


def test_each_elastic_restart_attempt_meets_in_its_own_store_namespace(monkeypatch):
    """After a restart the agent's store still holds the dead workers' addresses; a per-attempt prefix keeps the new
    group from reading them (2 of 5 restarts failed or hung without it)."""
    import torch.distributed as dist

    agent_store = dist.HashStore()
    monkeypatch.setattr(dist, "TCPStore", lambda host, port, is_master: agent_store)
    for name in ("TORCHELASTIC_USE_AGENT_STORE", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert distributed._attempt_store() is None  # not under torchrun: env:// as usual
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    distributed._attempt_store().set("rank_1_address", "127.0.0.1:4242")
    assert agent_store.get("pdfnet/attempt_2/rank_1_address") == b"127.0.0.1:4242"
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "3")
    assert distributed._attempt_store().check(["rank_1_address"]) is False  # the next attempt does not see it


def test_emulated_bf16_falls_back_to_fp16_everywhere(monkeypatch):
    # A V100/T4: bf16 "supported" only by emulation.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    gpu = torch.device("cuda", 0)
    assert not devices.native_bf16(gpu)
    assert devices.half_dtype(gpu) == torch.float16  # predict/evaluate --half
    assert devices.training_amp_dtype(gpu, "bf16") == torch.float16  # train.amp: bf16
    assert depth_autocast_dtype(gpu, half=True) == torch.float16  # Depth Anything
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # Ampere+
    assert devices.half_dtype(gpu) == torch.bfloat16 and devices.training_amp_dtype(gpu, "bf16") == torch.bfloat16
    assert devices.training_amp_dtype(gpu, "none") is None and depth_autocast_dtype(gpu, half=False) is None


def test_half_on_a_cpu_without_native_bf16_runs_float32(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "native_bf16", lambda device: False)
    monkeypatch.setattr(devices, "_NOTICES", set())
    with pytest.warns(RuntimeWarning, match="no native bfloat16"), devices.autocast(cpu, half=True):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.float32
    monkeypatch.setattr(devices, "native_bf16", lambda device: True)  # AVX512-BF16 / AMX
    with devices.autocast(cpu, half=True):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16


def test_cuda_backend_switches_apply_to_cuda_only():
    saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.fp32_precision,
             torch.backends.cudnn.conv.fp32_precision)
    try:
        torch.backends.cudnn.benchmark = False
        devices.configure_cuda_backends(torch.device("cpu"), tf32=True)
        assert torch.backends.cudnn.benchmark is False
        devices.configure_cuda_backends(torch.device("cuda", 0), tf32=True)
        assert torch.backends.cudnn.benchmark is True
        assert torch.backends.cuda.matmul.fp32_precision == torch.backends.cudnn.conv.fp32_precision == "tf32"
        devices.configure_cuda_backends(torch.device("cuda", 0), tf32=False)
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    finally:
        torch.backends.cudnn.benchmark = saved[0]
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved[1:]


def test_rng_state_is_saved_and_restored_for_this_ranks_gpu_only(monkeypatch):
    states = {i: torch.full((8,), i, dtype=torch.uint8) for i in range(4)}
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: states[torch.device(device).index])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state[0].item(),
                                                                                            torch.device(device))))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("every GPU's state was read"))
    saved = capture_rng(torch.device("cuda", 3))  # rank 3 of a 4-GPU run
    assert torch.equal(saved["cuda"], states[3])
    restore_rng(saved, torch.device("cuda", 0))  # resumed on a 1-GPU machine: no IndexError
    assert restored == [(3, torch.device("cuda", 0))]
    restored.clear()
    old_format = dict(saved, cuda=[states[0], states[1]])  # older checkpoints: one state per visible GPU
    restore_rng(old_format, torch.device("cuda", 5))
    assert restored == [(1, torch.device("cuda", 5))]
    restore_rng(saved, torch.device("cpu"))  # a CPU resume of a GPU checkpoint ignores the CUDA state
    assert len(restored) == 1 and "cuda" not in capture_rng(torch.device("cpu"))


def test_cpu_memory_tricks_stay_off_other_devices(monkeypatch):
    """The strip loops, heap trimming and one-hot logit head are CPU forms (pdfnet/lean): on another device (here
    'meta', which runs the forward without data) model.impl=auto builds the reference model, and none of them runs."""
    calls = {"trim": 0, "onehot": 0}
    real_onehot = lean_decoder.conv3x3_to_few

    def count(name, fn=None):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs) if fn else None
        return wrapped

    monkeypatch.setattr(lean_decoder, "release_freed_memory", count("trim"))
    monkeypatch.setattr(lean_decoder, "conv3x3_to_few", count("onehot", real_onehot))
    cfg = ModelConfig(backbone="swin_tiny_test", emb_dim=16, depth_head=False)
    meta_model = build_model(cfg, "meta").eval()
    assert implementation_of(meta_model) == "reference"
    with torch.no_grad():
        out = meta_model(torch.empty(1, 3, 128, 128, device="meta"), torch.empty(1, 1, 128, 128, device="meta"))
    assert out[0].shape == (1, 1, 128, 128) and calls == {"trim": 0, "onehot": 0}
    cpu_model = build_model(cfg, "cpu").eval()
    assert implementation_of(cpu_model) == "lean"
    with torch.no_grad():
        cpu_model(torch.randn(1, 3, 128, 128), torch.rand(1, 1, 128, 128))
    assert calls["trim"] > 0 and calls["onehot"] == 1


def _encoder_file(tmp_path, window: int, drop: tuple[str, ...] = ()) -> str:
    from dataclasses import replace

    spec = replace(SWIN_SPECS["swin_tiny_test"], window_size=window)
    sd = {k: v for k, v in SwinEncoder(spec).state_dict().items() if k not in drop and k != "absolute_pos_embed"}
    path = tmp_path / f"swin_w{window}.pth"
    torch.save(sd, path)
    return str(path)


def test_pretrained_backbone_reports_what_stays_random(tmp_path):
    target = SwinEncoder(SWIN_SPECS["swin_tiny_test"])  # window 12
    with pytest.raises(RuntimeError, match=r"relative_position_bias_table.*shape \[169, 1\] in the file, \[529, 1\]"):
        load_pretrained_backbone(target, _encoder_file(tmp_path, window=7))
    partial = _encoder_file(tmp_path, window=12, drop=("layers.2.blocks.1.mlp.fc1.weight",))
    with pytest.warns(UserWarning, match=r"1 encoder tensor.*layers\.2\.blocks\.1\.mlp\.fc1\.weight"):
        left = load_pretrained_backbone(target, partial)
    assert left == ["absolute_pos_embed", "layers.2.blocks.1.mlp.fc1.weight"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the expected absentees (ape table) are not warned about
        assert load_pretrained_backbone(target, _encoder_file(tmp_path, window=12)) == ["absolute_pos_embed"]


def test_model_buffers_are_derived_so_ddp_need_not_broadcast_them():
    model = PDFNet("swin_tiny_test", 16)
    names = [n for n, _ in model.named_buffers()]
    assert names and all(n.endswith("attn.relative_position_index") for n in names)
    assert not any(n.endswith("relative_position_index") for n in model.state_dict())  # non-persistent


def test_norms_keep_the_autocast_dtype_and_the_lean_backward_is_exact():
    conv = ConvNormAct(8, 8)
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(x).dtype == torch.bfloat16
        assert RMSNorm(8, channels_first=False)(torch.randn(2, 5, 8, dtype=torch.bfloat16,
                                                            requires_grad=True)).dtype == torch.bfloat16
    # float32: the forward is the plain autograd expression bit for bit; the backward agrees to rounding.
    norm = conv[1]
    y = conv[0](x)
    x32 = y.float()
    plain = torch.nn.functional.silu(norm.weight[:, None, None] * (x32 * torch.rsqrt(
        x32.pow(2).mean(dim=1, keepdim=True) + norm.eps)))
    lean = conv(x)
    assert torch.equal(plain, lean)
    g = torch.randn_like(plain)
    ga = torch.autograd.grad(plain, [x, norm.weight, conv[0].weight], g)
    gb = torch.autograd.grad(lean, [x, norm.weight, conv[0].weight], g)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=5e-5)
    x64 = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    w64 = torch.randn(6, dtype=torch.float64, requires_grad=True)
    from pdfnet.lean.norms import chunked_rms_norm
    from pdfnet.models.blocks import rms_norm

    assert torch.autograd.gradcheck(lambda a, b: rms_norm(a, b, 1, 1e-6, silu=True), (x64, w64))
    assert torch.autograd.gradcheck(lambda a, b: chunked_rms_norm(a, b, 1, 1e-6, silu=True), (x64, w64))


@pytest.mark.parametrize("mode", ["encoder", "all"])
def test_gradient_checkpointing_leaves_gradients_unchanged(mode):
    image, depth = torch.randn(2, 3, 128, 128), torch.rand(2, 1, 128, 128)

    def grads(checkpointing: str) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = PDFNet("swin_tiny_test", 16, drop_path=0.1).train()  # dropout and drop-path on: masks replayed
        model.set_grad_checkpointing(checkpointing)
        torch.manual_seed(1)
        seg, dep = model(image, depth, return_depth=True)
        (sum(o.float().mean() for o in seg) + sum(o.float().mean() for o in dep)).backward()
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    reference, checkpointed = grads("none"), grads(mode)
    assert reference.keys() == checkpointed.keys()
    for name, grad in reference.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_cpu_attention_dropout_in_chunks_replays_its_masks_in_backward():
    """Chunked, recomputed attention dropout (CPU training): the output is A @ v for a dropped attention matrix A,
    and backward must use the same A (the masks are replayed), i.e. grad_v = A^T grad_out."""
    from pdfnet.lean.attention import attention_with_dropout_in_chunks

    q, k = torch.randn(1, 1, 10, 4), torch.randn(1, 1, 6, 4)
    v = torch.randn(1, 1, 6, 6, requires_grad=True)
    torch.manual_seed(7)
    out = attention_with_dropout_in_chunks(q, k, v, 0.5, chunk=4)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    torch.manual_seed(7)  # the same draws again, with v = identity: the output is A itself
    dropped = attention_with_dropout_in_chunks(q, k, torch.eye(6).view(1, 1, 6, 6), 0.5, chunk=4)
    assert (dropped == 0).any()  # dropout really happened
    torch.testing.assert_close(out, dropped @ v.detach())
    torch.testing.assert_close(v.grad, dropped.transpose(-1, -2) @ g)
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v.detach())
    torch.testing.assert_close(attention_with_dropout_in_chunks(q, k, v.detach(), 1e-12, chunk=3), plain)


def test_lean_norm_in_row_chunks_equals_one_chunk(monkeypatch):
    from pdfnet.lean import norms

    x = torch.randn(2, 8, 40, 24, requires_grad=True)
    w = torch.randn(8, requires_grad=True)
    one = norms.chunked_rms_norm(x, w, 1, 1e-6, True)
    g = torch.randn_like(one)
    grads_one = torch.autograd.grad(one, (x, w), g)
    chunks = norms.row_chunks
    monkeypatch.setattr(norms, "row_chunks", lambda t, dim, elements=0: chunks(t, dim, elements=1000))
    assert len(norms.row_chunks(x, 1)) > 4
    many = norms.chunked_rms_norm(x, w, 1, 1e-6, True)
    grads_many = torch.autograd.grad(many, (x, w), g)
    # The same arithmetic; a strided slice may order the channel mean's additions differently (last-bit rounding).
    torch.testing.assert_close(one, many, rtol=1e-6, atol=1e-7)
    for a, b in zip(grads_one, grads_many):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_channels_last_maps_are_normed_as_nhwc_with_the_same_values_and_gradients():
    """The chunked norm on a channels-last map takes the NHWC route (contiguous chunks); the result keeps the
    channels-last layout and equals the [B,C,H,W] route, forward and backward."""
    from pdfnet.lean.cpu import channels_last
    from pdfnet.lean.norms import chunked_rms_norm as rms_norm_train

    torch.manual_seed(4)
    x = torch.randn(2, 8, 20, 12)
    w = torch.randn(8, requires_grad=True)
    g = torch.randn(2, 8, 20, 12)
    results = []
    for layout in (lambda t: t.contiguous(), channels_last):
        xi = layout(x).requires_grad_()
        out = rms_norm_train(xi, w, 1, 1e-6, silu=True)
        assert out.is_contiguous(memory_format=torch.channels_last) == (layout is channels_last)
        results.append((out, *torch.autograd.grad(out, (xi, w), layout(g))))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
