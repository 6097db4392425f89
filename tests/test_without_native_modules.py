"""Where no native module loads (a build for another torch or Python, a failed
build), fusedlr still imports and its pure-PyTorch reference backend is the
default: the layout numbers come from the generated ``fusedlr._layout``."""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import importlib.abc
    import sys

    class HideNativeModules(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in ("fusedlr._C", "fusedlr._C_cuda", "fusedlr._C_emulated", "fusedlr._C_host"):
                raise ImportError(f"{name} hidden by the test")
            return None

    sys.meta_path.insert(0, HideNativeModules())

    import torch
    from torch.optim import lr_scheduler as tls

    import fusedlr
    from fusedlr import _native
    from fusedlr import schedules as S

    assert _native.cpu_module is None and _native.emulated_module is None and _native.cuda_module is None
    assert _native.host_module is None and fusedlr.build_info()["links_libtorch"] is False
    assert fusedlr.available_backends() == ["reference"], fusedlr.available_backends()
    assert fusedlr.build_info()["cpu_kernels"] is False

    def run(torch_cls, fused_cls, options, steps=30):
        gen = torch.Generator().manual_seed(0)
        base = [torch.randn(5, 3, generator=gen), torch.randn(7, generator=gen)]
        tp = [torch.nn.Parameter(b.clone()) for b in base]
        fp = [torch.nn.Parameter(b.clone()) for b in base]
        t_opt = torch_cls(tp, **options)
        sched = tls.OneCycleLR(t_opt, max_lr=options["lr"], total_steps=steps + 1, cycle_momentum=False)
        f_opt = fused_cls(fp, schedule=S.from_torch(sched), max_grad_norm=1.0, **options)
        assert f_opt._backend_of(torch.device("cpu")) == "reference"
        for _ in range(steps):
            grads = [torch.randn(b.shape, generator=gen) for b in base]
            for p, g in zip(tp, grads):
                p.grad = g.clone()
            for p, g in zip(fp, grads):
                p.grad = g.clone()
            torch.nn.utils.clip_grad_norm_(tp, 1.0)
            t_opt.step()
            sched.step()
            f_opt.step()
        worst = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(fp, tp))
        assert worst < 1e-5, (fused_cls.__name__, worst)
        state = f_opt.state_dict()  # checkpoints need the layout numbers too
        fused_cls(fp, **options).load_state_dict(state)

    run(torch.optim.SGD, fusedlr.SGD, dict(lr=0.05, momentum=0.9, nesterov=True))
    run(torch.optim.AdamW, fusedlr.AdamW, dict(lr=1e-2, weight_decay=0.1))
    run(torch.optim.Adam, fusedlr.Adam, dict(lr=1e-2, weight_decay=0.1, amsgrad=True))
    lrs = S.with_warmup(S.Cosine(10), 3).values(range(12), [0.1])  # the reference evaluator
    assert lrs.shape == (12, 1)
    try:
        fusedlr.SGD([torch.nn.Parameter(torch.ones(2))], backend="cpu")
    except RuntimeError as exc:
        assert "not built or failed to import" in str(exc) and "hidden by the test" in str(exc)
    else:
        raise AssertionError("backend='cpu' without the CPU module must fail clearly")
    print("reference without native modules: ok")
''')


def test_the_reference_backend_runs_without_native_modules():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    assert "ok" in run.stdout


HOST_SCRIPT = textwrap.dedent('''
    import importlib.abc
    import sys

    class HideHostModule(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "fusedlr._C_host":
                raise ImportError(f"{name} hidden by the test")
            return None

    sys.meta_path.insert(0, HideHostModule())

    import torch
    import fusedlr
    from fusedlr import _native

    assert _native.cpu_module is not None and _native.host_module is None
    assert fusedlr.build_info()["links_libtorch"] is False
    gen = torch.Generator().manual_seed(0)
    base = [torch.randn(5, 3, generator=gen), torch.randn(7, generator=gen), torch.randn(300, generator=gen)]
    tp = [torch.nn.Parameter(b.clone()) for b in base]
    fp = [torch.nn.Parameter(b.clone()) for b in base]
    t_opt = torch.optim.AdamW(tp, lr=1e-2, weight_decay=0.1)
    f_opt = fusedlr.AdamW(fp, lr=1e-2, weight_decay=0.1, backend="cpu")
    for i in range(12):
        grads = [torch.randn(b.shape, generator=gen) for b in base]
        if i == 6:  # a param's storage replaced under the kept plan: the Python checks must see it
            for params in (tp, fp):
                params[2].data = params[2].data.clone()
        for params in (tp, fp):
            for p, g in zip(params, grads):
                p.grad = g.clone()
        t_opt.step()
        f_opt.step()
    [bucket] = [b for buckets in f_opt._plan.work.values() for b in buckets]
    assert bucket._kept is not None and bucket._kept._host_checks is None  # the plan was kept, checked in Python
    worst = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(fp, tp))
    assert worst < 1e-5, worst
    print("cpu backend without the host module: ok")
''')


def test_the_cpu_backend_keeps_plans_checked_in_python_without_the_host_module():
    """Where the libtorch host module is missing (an isolated build, another
    torch), a kept plan's checks run in Python and still see a change."""
    run = subprocess.run([sys.executable, "-c", HOST_SCRIPT], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    assert "ok" in run.stdout
