"""PyTorch baseline for the ResNet-50 benchmark (run with a Python that has torch; on the device:
``/opt/torch/.venv/bin/python3 bench/torch_baseline.py MODEL.onnx --out F.json``).

The network is the same ResNet-50 as the ONNX file (torchvision's architecture with batch-norm folded
into the convolutions): an ``nn.Module`` of that architecture takes the ONNX file's weights in order, and
``--check`` compares its output with onnxruntime's. Timed: the network alone and the full pipeline
(uint8 HWC image -> normalise -> network -> softmax -> top-5), eager and with CUDA graphs, by CUDA
events; and the peak memory PyTorch allocated for one run. The baselines a user would pick are timed too
(``*_cl``: channels-last model and activations): CUDA graphs channels-last, and (unless ``--no-compile``)
``torch.compile(mode="reduce-overhead")``, which adds its own CUDA graphs; its compile time is recorded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1)
        self.conv3 = nn.Conv2d(width, width * 4, 1)
        self.down = nn.Conv2d(cin, width * 4, 1, stride) if stride != 1 or cin != width * 4 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv1(x))
        y = torch.relu(self.conv2(y))
        y = self.conv3(y)
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet50(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 7, 2, 3)
        blocks, cin = [], 64
        for stage, (count, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True)):
            for i in range(count):
                blocks.append(Bottleneck(cin, width, 2 if stage > 0 and i == 0 else 1))
                cin = width * 4
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.stem(x)), 3, 2, 1)
        x = self.blocks(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    def convs_in_onnx_order(self) -> list[nn.Module]:
        order = [self.stem]
        for block in self.blocks:
            order += [block.conv1, block.conv2, block.conv3] + ([block.down] if block.down is not None else [])
        return order + [self.fc]


def load_onnx_weights(model: ResNet50, path: Path) -> None:
    """From the ONNX file (needs the onnx package) or the .npz that bench/resnet50.py writes beside it
    (for a torch environment without onnx)."""
    if path.suffix == ".npz":
        data = np.load(path)
        layers = [(data[f"w{i}"], data[f"b{i}"]) for i in range(len(data.files) // 2)]
    else:
        from resnet50 import conv_weights

        layers = conv_weights(path)
    targets = model.convs_in_onnx_order()
    assert len(layers) == len(targets), (len(layers), len(targets))
    with torch.no_grad():
        for (weight, bias), layer in zip(layers, targets, strict=True):
            layer.weight.copy_(torch.from_numpy(weight.copy()))
            layer.bias.copy_(torch.from_numpy(bias.copy()))


class Pipeline(nn.Module):
    """uint8 [N, H, W, 3] -> normalised NCHW -> network -> softmax -> top-5 (probabilities, indices)."""

    def __init__(self, net: nn.Module, dtype: torch.dtype, channels_last: bool = False):
        super().__init__()
        self.net, self.dtype = net, dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor):
        x = image.permute(0, 3, 1, 2).float() / 255
        x = ((x - self.mean) / self.std).to(self.dtype).contiguous(memory_format=self.memory_format)
        probs = torch.softmax(self.net(x).float(), dim=-1)
        return torch.topk(probs, 5, dim=-1)


def time_cuda(fn, iters: int, warmup: int = 20) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    qs = statistics.quantiles(samples, n=20)
    return {"median_ms": statistics.median(samples), "p5_ms": qs[0], "p95_ms": qs[-1]}


def graphed(fn, *args):
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn(*args)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(*args)
    return graph.replay


def channels_last_runs(net: nn.Module, x: torch.Tensor, image: torch.Tensor, dtype: torch.dtype, iters: int,
                       compile_too: bool) -> dict:
    """The network and the pipeline channels-last: CUDA graphs, and torch.compile(mode="reduce-overhead")."""
    import copy
    import time

    net = copy.deepcopy(net).to(memory_format=torch.channels_last)  # the other runs keep their own layout
    x = x.contiguous(memory_format=torch.channels_last)
    pipeline = Pipeline(net, dtype, channels_last=True).cuda()
    runs = {"network_graph_cl": time_cuda(graphed(net, x), iters),
            "pipeline_graph_cl": time_cuda(graphed(pipeline, image), iters)}
    if compile_too:
        for name, module, arg in (("network", net, x), ("pipeline", pipeline, image)):
            compiled = torch.compile(module, mode="reduce-overhead")
            start = time.perf_counter()
            for _ in range(3):  # compiles, then records its CUDA graph
                compiled(arg)
            torch.cuda.synchronize()
            runs[f"{name}_compiled_cl_compile_s"] = time.perf_counter() - start
            runs[f"{name}_compiled_cl"] = time_cuda(lambda c=compiled, a=arg: c(a), iters)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--precision", nargs="+", default=["fp16", "fp32"])
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--check", action="store_true", help="compare with onnxruntime on the CPU first")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="also time torch.compile(mode='reduce-overhead') channels-last (compiles for minutes)")
    args = parser.parse_args()
    net = ResNet50().eval()
    load_onnx_weights(net, args.model)
    if args.check:
        import onnxruntime as ort

        x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
        want = ort.InferenceSession(str(args.model.with_suffix(".onnx")), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        with torch.no_grad():
            got = net(torch.from_numpy(x)).numpy()
        rel = float(np.linalg.norm(got - want) / np.linalg.norm(want))
        print(f"torch vs onnxruntime relative L2: {rel:.2e}")
        assert rel < 1e-4, rel
    if not torch.cuda.is_available():
        return
    torch.backends.cudnn.benchmark = True
    # fp32 means fp32, as in the TensorRT engines (PyTorch's default lets cuDNN use TF32 for convolutions)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "tf32": False, "runs": {}}
    for precision in args.precision:
        dtype = torch.float16 if precision == "fp16" else torch.float32
        model = ResNet50().eval()
        load_onnx_weights(model, args.model)
        model = model.cuda().to(dtype)
        pipeline = Pipeline(model, dtype).cuda()
        for batch in args.batch:
            x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=dtype)
            image = torch.randint(0, 256, (batch, 224, 224, 3), device="cuda", dtype=torch.uint8)
            with torch.inference_mode():
                for _ in range(3):  # cuDNN autotuning (and its workspace) happens here, not in the measurement
                    pipeline(image)
                torch.cuda.synchronize()
                resident = torch.cuda.memory_allocated()  # weights and inputs
                torch.cuda.reset_peak_memory_stats()
                pipeline(image)
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated() - resident
                result["runs"][f"{precision}_b{batch}"] = {
                    "network_eager": time_cuda(lambda m=model, t=x: m(t), args.iters),
                    "network_graph": time_cuda(graphed(model, x), args.iters),
                    "pipeline_eager": time_cuda(lambda p=pipeline, t=image: p(t), args.iters),
                    "pipeline_graph": time_cuda(graphed(pipeline, image), args.iters),
                    "peak_activation_bytes": peak,  # allocated during one pipeline run, beyond weights
                }
                result["runs"][f"{precision}_b{batch}"].update(
                    channels_last_runs(model, x, image, dtype, args.iters, args.compile))
            print(precision, batch, json.dumps(result["runs"][f"{precision}_b{batch}"]), flush=True)
            if args.out:  # after each configuration: a timed-out run keeps what it measured
                args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
