"""Never crash, never silently wrong: params, grads and state changed under
the optimizer, state resets, counters written from the host, bad checkpoints.
Each case either raises a clear error with nothing changed, or behaves as
torch.optim does (torch.optim is the oracle, run side by side). Cases that
used to crash the process run in a subprocess, so a segfault fails one test."""
import collections
import contextlib
import gc
import io
import subprocess
import sys
import textwrap
import weakref

import pytest
import torch
from torch.optim import lr_scheduler as tls

import fusedlr
from fusedlr import _native
from fusedlr import schedules as S
from optim_oracle import clone_params, device_for, grads_for_step, make_params, set_grads

OPTIMIZERS = {"sgd": (torch.optim.SGD, fusedlr.SGD, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3)),
              "adamw": (torch.optim.AdamW, fusedlr.AdamW, dict(lr=1e-2, weight_decay=0.1))}


def _run_isolated(code: str, backend: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``code``: in a subprocess for the native
    backends (a crash there fails this test only), in-process for the pure-torch
    reference, which cannot crash the interpreter."""
    code = textwrap.dedent(code)
    if backend == "reference":
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(code, {})
        return 0, out.getvalue(), ""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout, result.stderr


# ---- params and grads changed behind the optimizer (used to segfault) -------------
MUTATIONS = {
    "grad resized larger": "m.weight.grad.data = torch.ones(1 << 20)",
    "grad resized smaller": "m.weight.grad.data = torch.ones(3)",
    "param replaced by a bigger one": "m.weight.data = torch.randn(1 << 20); m.weight.grad = torch.randn(1 << 20)",
    "param replaced by a smaller one": "m.weight.data = torch.randn(3); m.weight.grad = torch.randn(3)",
    "Module.double() after building": "m.double(); m.zero_grad(); m(x.double()).sum().backward()",
    "Module.half() after building": "m.half(); m.zero_grad(); m(x.half()).sum().backward()",
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_changed_param_or_grad_raises_a_clear_error_and_changes_nothing(mutation, name, backend):
    """(SGD without momentum keeps no state tensor: like torch it then updates a changed param as it is.)"""
    extra = "momentum=0.9" if name == "sgd" else ""
    returncode, stdout, stderr = _run_isolated(f"""
        import torch, fusedlr
        torch.manual_seed(0)
        m = torch.nn.Linear(8, 8)
        opt = fusedlr.{OPTIMIZERS[name][1].__name__}(m.parameters(), lr=0.1, backend={backend!r}, {extra})
        x = torch.randn(4, 8)
        m(x).sum().backward()
        opt.step()
        m.zero_grad()
        m(x).sum().backward()
        {MUTATIONS[mutation]}
        before = [p.detach().clone() for p in m.parameters()]
        state = [{{k: v.clone() for k, v in st.items()}} for st in opt.state.values()]
        count = int(opt.step_count)
        try:
            opt.step()
        except RuntimeError as exc:
            print("ERROR:", exc)
        assert all(torch.equal(a, b) for a, b in zip(before, m.parameters())), "params changed"
        assert all(torch.equal(old[k], v) for old, st in zip(state, opt.state.values()) for k, v in st.items()), \
            "state changed"
        assert int(opt.step_count) == count
    """, backend)
    assert returncode == 0, stderr[-2000:]
    assert "ERROR: param_groups[0]['params'][0]: " in stdout  # the param named, not a bare size error


def test_torch_also_refuses_the_adamw_cases():
    """The oracle: torch.optim.AdamW raises for each mutation too."""
    for mutation, code in MUTATIONS.items():
        torch.manual_seed(0)
        m = torch.nn.Linear(8, 8)
        opt = torch.optim.AdamW(m.parameters(), lr=0.1)
        x = torch.randn(4, 8)
        m(x).sum().backward()
        opt.step()
        m.zero_grad()
        m(x).sum().backward()
        exec(code, {"torch": torch, "m": m, "x": x})
        with pytest.raises(RuntimeError):
            opt.step()


def test_a_bad_grad_on_the_last_param_leaves_the_earlier_ones_untouched(backend):
    params = clone_params(make_params(), device_for(backend))
    opt = fusedlr.AdamW(params, lr=1e-2, backend=backend)
    set_grads(params, grads_for_step(params, 1))
    before = [p.detach().clone() for p in params]
    params[-1].grad.data = torch.ones(5, device=params[-1].device)
    with pytest.raises(RuntimeError, match=r"param_groups\[0\]\['params'\]\[6\]: the gradient is"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, params))


# ---- state reset or replaced: as torch ---------------------------------------------
def _twin_runs(name, backend, edit, steps=12, at=5, shapes=None, groups=lambda params, kwargs: params):
    """torch and fusedlr run side by side; ``edit(opt, params)`` is applied to both at step ``at``.
    ``groups(params, kwargs)``: the param groups (default: one)."""
    torch_cls, fused_cls, kwargs = OPTIMIZERS[name]
    base = make_params() if shapes is None else make_params(shapes=shapes)
    tp, fp = clone_params(base), clone_params(base, device_for(backend))
    t_opt, f_opt = torch_cls(groups(tp, kwargs), **kwargs), fused_cls(groups(fp, kwargs), backend=backend, **kwargs)
    for step in range(steps):
        if step == at:
            edit(t_opt, tp)
            edit(f_opt, fp)
        grads = grads_for_step(base, step)
        set_grads(tp, grads)
        set_grads(fp, grads)
        t_opt.step()
        f_opt.step()
    return tp, fp, t_opt, f_opt


def _assert_close(expected, actual):
    for e, a in zip(expected, actual):
        torch.testing.assert_close(a.detach().cpu(), e.detach(), rtol=1e-5, atol=1e-6)


def _reset_all(opt, params):
    opt.state.clear()


def _new_state_dict(opt, params):
    opt.state = collections.defaultdict(dict)


def _reset_one(opt, params):
    opt.state[params[0]] = {}


def _replace_buffers(opt, params):
    for p in params:
        st = opt.state[p]
        for key in ("exp_avg", "momentum_buffer"):
            if st.get(key) is not None:
                st[key] = torch.full_like(st[key], 0.25)


@pytest.mark.parametrize("edit", [_reset_all, _new_state_dict, _reset_one, _replace_buffers])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_reset_or_replaced_mid_run_matches_torch(edit, name, backend):
    tp, fp, t_opt, f_opt = _twin_runs(name, backend, edit)
    _assert_close(tp, fp)


def test_state_dict_right_after_a_reset_is_empty_like_torch():
    p = torch.nn.Parameter(torch.randn(3))
    opt = fusedlr.AdamW([p])
    p.grad = torch.ones(3)
    opt.step()
    opt.state.clear()
    assert opt.state_dict()["state"] == {}
    opt.step()
    assert int(opt.state_dict()["state"][0]["step"]) == 1


def _append_param(opt, params):
    extra = torch.nn.Parameter(torch.linspace(-1, 1, 9, device=params[0].device))
    opt.param_groups[0]["params"].append(extra)
    params.append(extra)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_param_appended_to_a_group_gets_state_lazily_like_torch(name, backend):
    torch_cls, fused_cls, kwargs = OPTIMIZERS[name]
    base = make_params()
    tp, fp = clone_params(base), clone_params(base, device_for(backend))
    t_opt, f_opt = torch_cls(tp, **kwargs), fused_cls(fp, backend=backend, **kwargs)
    for step in range(10):
        if step == 4:
            _append_param(t_opt, tp)
            _append_param(f_opt, fp)
        for params in (tp, fp):
            set_grads(params, grads_for_step(tp, step))
        t_opt.step()
        f_opt.step()
    _assert_close(tp, fp)


def test_sgd_momentum_switched_on_mid_run_starts_the_buffer_at_the_gradient(backend):
    def switch_on(opt, params):
        opt.param_groups[0]["momentum"] = 0.9
        opt.param_groups[0]["dampening"] = 0.5

    base = make_params()
    tp, fp = clone_params(base), clone_params(base, device_for(backend))
    t_opt = torch.optim.SGD(tp, lr=0.05)
    f_opt = fusedlr.SGD(fp, lr=0.05, backend=backend)
    for step in range(10):
        if step == 4:
            switch_on(t_opt, tp)
            switch_on(f_opt, fp)
        grads = grads_for_step(base, step)
        set_grads(tp, grads)
        set_grads(fp, grads)
        t_opt.step()
        f_opt.step()
    _assert_close(tp, fp)


# ---- the step counter ----------------------------------------------------------------
def test_a_negative_counter_written_from_the_host_is_refused(backend):
    p = torch.nn.Parameter(torch.randn(3))
    opt = fusedlr.SGD([p], lr=0.1, schedule=S.Step(2, 0.1), backend=backend)
    p.grad = torch.ones(3)
    opt.step_count.fill_(-10)
    with pytest.raises(ValueError, match="step_count must be >= 0, got -10"):
        opt.step()
    with pytest.raises(ValueError, match="step_count must be >= 0"):
        opt.current_lr
    before = p.detach().clone()
    opt.step_count.fill_(4)
    opt.step()
    torch.testing.assert_close(p.detach(), before - 0.1 * 0.01 * torch.ones(3), rtol=1e-6, atol=0)


def test_current_lr_follows_a_counter_written_from_the_host(backend):
    schedule = S.with_warmup(S.Cosine(100, eta_min=1e-4), 10)
    opt = fusedlr.AdamW([torch.nn.Parameter(torch.randn(3))], lr=1e-3, schedule=schedule, backend=backend)
    for n in (0, 7, 55, 300):
        opt.step_count.fill_(n)
        expected = 1e-4 + (1e-3 - 1e-4) * (1 + torch.cos(torch.tensor(torch.pi * min(max(n - 10, 0), 100) / 100,
                                                                        dtype=torch.float64))) / 2
        if n < 10:
            expected = torch.tensor(1e-3 * n / 10, dtype=torch.float64)
        torch.testing.assert_close(opt.current_lr.cpu(), expected.reshape(1), rtol=1e-12, atol=0)


def test_the_counter_saturates_at_the_int64_maximum(backend):
    p = torch.nn.Parameter(torch.randn(3))
    opt = fusedlr.AdamW([p], lr=1e-3, schedule=S.Cosine(1000), backend=backend)
    top = 2 ** 63 - 1
    opt.step_count.fill_(top)
    opt.state[p]["step"].fill_(top)
    for _ in range(2):
        p.grad = torch.ones(3)
        opt.step()
    assert int(opt.step_count) == top and int(opt.state[p]["step"]) == top
    assert torch.isfinite(p).all() and torch.isfinite(opt.current_lr).all()


# ---- checkpoints: checked first, nothing changed on error ---------------------------
def _snapshot(opt):
    sd = opt.state_dict()
    return ({i: {k: v.clone() for k, v in st.items()} for i, st in sd["state"].items()},
            int(opt.step_count), [dict(g) for g in sd["param_groups"]])


def _assert_unchanged(opt, snapshot):
    state, count, groups = snapshot
    now = _snapshot(opt)
    assert now[1] == count and now[2] == groups
    for i, st in state.items():
        assert all(torch.equal(v, now[0][i][k]) for k, v in st.items())


def _stepped(cls, steps=3, **kwargs):
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))]
    opt = cls(params, **kwargs)
    for step in range(steps):
        set_grads(params, grads_for_step(params, step, skip_every=1000))
        opt.step()
    return opt


def _torch_sgd_state():
    return _stepped(torch.optim.SGD, lr=0.1, momentum=0.9).state_dict()


def _with(sd, path, value):
    *keys, last = path
    target = sd
    for key in keys:
        target = target[key]
    target[last] = value
    return sd


_STORED_SCHEDULES = ("param_groups", 0, "fusedlr", "schedules")  # where state_dict() keeps them

BAD_CHECKPOINTS = {
    "fusedlr SGD into AdamW": (lambda: _stepped(fusedlr.SGD, lr=0.1, momentum=0.9).state_dict(),
                               ValueError, "from fusedlr.SGD"),
    "torch SGD into AdamW": (_torch_sgd_state, ValueError, "'momentum_buffer', which fusedlr.AdamW does not keep"),
    "a (1,) state for a (4, 3) param": (lambda: _with(_stepped(fusedlr.AdamW).state_dict(), ("state", 0, "exp_avg"),
                                                      torch.ones(1)), ValueError, r"shape \(1,\) but the param"),
    "a negative step_count": (lambda: _with(_stepped(fusedlr.AdamW).state_dict(), ("state", 0, "schedule_step"),
                                            torch.tensor(-5)), ValueError, "schedule_step.*integer in"),
    "a fractional step_count": (lambda: _with(_stepped(fusedlr.AdamW).state_dict(), ("state", 0, "schedule_step"), 5.5),
                                ValueError, "schedule_step.*integer >= 0, got 5.5"),
    "a param step of -1": (lambda: _with(_stepped(fusedlr.AdamW).state_dict(), ("state", 1, "step"),
                                         torch.tensor(-1.0)), ValueError, r"\['params'\]\[1\]: saved state\['step'\]"),
    "a plateau buffer of another size": (
        lambda: _with(_stepped(fusedlr.AdamW).state_dict(), ("state", 0, "schedule_plateau"),
                      torch.zeros(3, dtype=torch.float64)), ValueError, "plateau"),
    "state for an unknown param": (lambda: _with(_stepped(fusedlr.AdamW).state_dict(), ("state", 7), {}),
                                   ValueError, "no param group lists"),
    "an unknown schedule type": (lambda: _with(_stepped(fusedlr.AdamW).state_dict(), (*_STORED_SCHEDULES, 0, "type"),
                                               "os.system"), ValueError, "unknown type 'os.system'"),
    # stored schedules are rebuilt through their constructors: nothing malformed reaches the evaluator
    "an empty stored Chain": (lambda: _with(_stepped(fusedlr.AdamW).state_dict(), (*_STORED_SCHEDULES, 0),
                                            {"type": "Chain", "fields": {"schedules": []}}),
                              ValueError, r"node 0 \(Chain\) is invalid: schedules must hold at least one"),
    "stored Piecewise factors that do not fit": (
        lambda: _with(_stepped(fusedlr.AdamW).state_dict(), (*_STORED_SCHEDULES, 0),
                      {"type": "MultiStep", "fields": {"milestones": [3], "gamma": 0.5, "boundaries": [3.0, 5.0, 7.0],
                                                        "factors": [1.0]}}),
        ValueError, r"node 0 \(MultiStep\) is invalid: factors must have"),
    "stored OneCycle phases that do not fit": (
        lambda: _with(_stepped(fusedlr.AdamW, schedule=S.OneCycle(0.1, 100)).state_dict(),
                      (*_STORED_SCHEDULES, 0, "fields", "phase_ends"), list(range(100))),
        ValueError, r"node 0 \(OneCycle\) is invalid: a 2-phase cycle needs"),
    "a stored negative T_max": (lambda: _with(_stepped(fusedlr.AdamW, schedule=S.Cosine(10)).state_dict(),
                                              (*_STORED_SCHEDULES, 0, "fields", "T_max"), -3.0),
                                ValueError, "T_max must be in"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_a_bad_checkpoint_is_refused_and_changes_nothing(case):
    make, error, message = BAD_CHECKPOINTS[case]
    opt = _stepped(fusedlr.AdamW, steps=2, lr=1e-2)
    before = _snapshot(opt)
    with pytest.raises(error, match=message):
        opt.load_state_dict(make())
    _assert_unchanged(opt, before)
    params = [p for g in opt.param_groups for p in g["params"]]
    set_grads(params, grads_for_step(params, 9, skip_every=1000))
    opt.step()  # still usable, on its own tensors
    assert int(opt.step_count) == 3


def _through_bytes(obj, weights_only=True):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=weights_only)


def test_checkpoints_load_with_weights_only_and_resume_bit_identically(backend):
    plateau = S.Plateau(patience=1, factor=0.5)
    schedules = [S.Sequential([S.warmup(5), plateau], [5]), S.Chain([S.Cosine(40, eta_min=1e-5), plateau])]

    def make(params):
        groups = [{"params": params[:3], "schedule": schedules[0]},
                  {"params": params[3:], "lr": 3e-3, "schedule": schedules[1],
                   "weight_decay_schedule": S.Linear(1.0, 0.5, 20)}]
        return fusedlr.AdamW(groups, lr=1e-2, amsgrad=True, backend=backend)

    base = make_params()
    straight = clone_params(base, device_for(backend))
    resumed = clone_params(base, device_for(backend))
    opt, first = make(straight), make(resumed)
    for step in range(30):
        for params, o in ((straight, opt), (resumed, first)):
            if step < 15 or o is opt:
                set_grads(params, grads_for_step(base, step))
                o.step()
                o.report(torch.tensor(1.0, device=params[0].device))
    saved = _through_bytes(first.state_dict())  # weights_only=True: plain data and tensors only
    second = make(resumed)
    second.load_state_dict(saved)
    group_schedules = [g["schedule"] for g in second.param_groups]
    assert S.Plateau not in {type(s) for s in group_schedules}  # rebuilt as the stored trees
    for step in range(15, 30):
        set_grads(resumed, grads_for_step(base, step))
        second.step()
        second.report(torch.tensor(1.0, device=resumed[0].device))
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))
    assert torch.equal(opt.current_lr, second.current_lr)


def test_a_torch_optimizer_still_loads_a_fusedlr_checkpoint():
    opt = _stepped(fusedlr.AdamW, lr=1e-2, schedule=S.with_warmup(S.Cosine(10), 2))
    t_opt = torch.optim.AdamW([torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))])
    t_opt.load_state_dict(_through_bytes(opt.state_dict()))
    assert int(t_opt.state_dict()["state"][0]["step"]) == 3


def test_load_state_dict_copies_into_the_existing_state_tensors():
    opt = _stepped(fusedlr.AdamW, lr=1e-2)
    tensors = {id(v) for st in opt.state.values() for v in st.values()}
    opt.load_state_dict(_stepped(fusedlr.AdamW, steps=5, lr=1e-2).state_dict())
    assert {id(v) for st in opt.state.values() for v in st.values()} == tensors
    assert int(opt.step_count) == 5


# ---- schedules: immutable, from_torch faithful, clear errors --------------------------
def test_schedules_are_immutable():
    cosine = S.Cosine(10)
    with pytest.raises(AttributeError, match="immutable"):
        cosine.T_max = 20
    sequential = S.with_warmup(cosine, 5)
    with pytest.raises(AttributeError, match="immutable"):
        sequential.milestones = (3,)
    with pytest.raises(AttributeError):
        sequential.milestones.append(3)  # a tuple
    assert cosine.values([5], [1.0], backend="cpu").item() == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi / 2)).item()))


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_from_torch_cyclic_reproduces_torch_whatever_lr_the_fusedlr_group_has(mode, backend):
    param = torch.nn.Parameter(torch.zeros(1))
    t_opt = torch.optim.SGD([param], lr=0.5)
    sched = tls.CyclicLR(t_opt, base_lr=0.01, max_lr=0.1, step_size_up=7, mode=mode, gamma=0.97,
                         cycle_momentum=False)
    expected = []
    for _ in range(40):
        expected.append(t_opt.param_groups[0]["lr"])
        t_opt.step()
        sched.step()
    f_opt = fusedlr.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, schedule=S.from_torch(sched), backend=backend)
    got = []
    for _ in range(40):
        got.append(float(f_opt.current_lr[0]))
        f_opt.step()
    assert got == pytest.approx(expected, rel=1e-12)


def test_from_torch_refuses_subclasses_that_change_the_lr():
    class HalvedStep(tls.StepLR):
        def get_lr(self):
            return [lr / 2 for lr in super().get_lr()]

    class Named(tls.StepLR):  # changes nothing about the lr: converted
        pass

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(TypeError, match="HalvedStep: it overrides get_lr of torch's StepLR"):
        S.from_torch(HalvedStep(opt, 3))
    assert isinstance(S.from_torch(Named(opt, 3)), S.Step)


@pytest.mark.parametrize("make, error, message", [
    (lambda: S.Cyclic(1, 1e-320, 1e10), ValueError, "step_size_up"),
    (lambda: S.Cosine(10).values([1.5]), TypeError, r"steps\[0\] must be an int, got 1.5"),
    (lambda: S.Step(10 ** 400), ValueError, r"step_size must be an int <= 2\*\*63 - 1"),
    (lambda: fusedlr.SGD([torch.nn.Parameter(torch.zeros(3))], lr=10 ** 400), ValueError, "lr must be finite"),
    (lambda: S.Cosine(10 ** 400), ValueError, "T_max must be finite"),
    (lambda: fusedlr.layer_decay_param_groups(torch.nn.Linear(3, 3).parameters(), 0.1, 0.9, 2), TypeError,
     r"\(name, param\) pairs, e.g. model.named_parameters\(\)"),
])
def test_nonsense_arguments_get_clear_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_deeply_nested_schedules_are_refused_at_construction():
    schedule = S.Constant()
    with pytest.raises(ValueError, match="nest 65 composites deep; at most 64"):
        for _ in range(400):
            schedule = S.Sequential([schedule, S.Constant(0.5)], [1])


def test_base_lr_errors_name_the_group_they_are_about():
    groups = [{"params": [torch.nn.Parameter(torch.zeros(3))]},
              {"params": [torch.nn.Parameter(torch.zeros(3))], "lr": 1e-3, "schedule": S.Polynomial(10, end_lr=0.01)}]
    with pytest.raises(ValueError, match="base lr of group 1"):
        fusedlr.SGD(groups, lr=0.1)


def test_add_param_group_refuses_a_group_its_schedules_do_not_fit():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = fusedlr.SGD([p], lr=0.1, schedule=S.PerGroup([S.Constant(0.5)]))
    with pytest.raises(ValueError, match="written for 1 param groups but the optimizer has 2"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))]})
    assert len(opt.param_groups) == 1
    p.grad = torch.ones(3)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((3,), -0.05))


def test_group_edits_with_tensors_or_deleted_keys(backend):
    p = torch.nn.Parameter(torch.zeros(3))
    opt = fusedlr.SGD([p], lr=0.1, schedule=S.Step(1, 0.5), backend=backend)
    opt.param_groups[0]["lr"] = torch.tensor([0.1, 0.2])
    p.grad = torch.ones(3)
    with pytest.raises(TypeError, match="lr must be a real number, got Tensor"):
        opt.step()
    opt.param_groups[0]["lr"] = torch.tensor(0.2)  # one element: read once, as torch accepts it
    del opt.param_groups[0]["schedule"]  # no schedule: a constant lr, as torch without a scheduler
    opt.step()
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((3,), -0.4))


def test_a_meta_param_first_does_not_break_construction():
    meta, real = torch.nn.Parameter(torch.zeros(3, device="meta")), torch.nn.Parameter(torch.zeros(3))
    opt = fusedlr.SGD([meta, real], lr=0.1, backend="reference")
    assert opt.step_count.device.type == "meta"


# ---- changes the kept step plan must notice (found in review) ---------------------------
def _moved_across_groups(opt, params):
    first, second = opt.param_groups
    second["params"].insert(0, first["params"].pop())  # same flat order, another group


def _transposed_in_place(opt, params):
    square = next(p for p in params if p.dim() == 2 and p.shape[0] == p.shape[1])
    square.data = square.data.t()  # same storage and shape, no longer contiguous


def _counter_reset_in_place(opt, params):
    """Adam's moments and step count reset in place (torch's SGD keeps no count)."""
    for st in opt.state.values():
        if "exp_avg" in st:
            for key in ("exp_avg", "exp_avg_sq", "step"):
                st[key].zero_()


@pytest.mark.parametrize("edit", [_moved_across_groups, _transposed_in_place, _counter_reset_in_place])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_kept_step_plans_notice_what_torch_would_see(edit, name, backend):
    def two_groups(params, kwargs):
        return [{"params": params[:2]}, {"params": params[2:], "lr": kwargs["lr"] * 3, "weight_decay": 0.0}]

    # at step 5 every param had a grad in step 4 too (param 1 has none every third step): a kept plan
    tp, fp, _, _ = _twin_runs(name, backend, edit, steps=8, at=5, shapes=[(6, 6), (5,), (40_000,), (3, 4)],
                              groups=two_groups)
    _assert_close(tp, fp)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_storage_replaced_in_place_is_followed(name, backend):
    """``state[k].data = ...`` (the state-offloading idiom) keeps the tensor and
    frees its storage: the kernels must not write the old one (a crash when
    they did, hence the subprocess)."""
    returncode, stdout, stderr = _run_isolated(f"""
        import torch, fusedlr
        torch.manual_seed(0)
        params = [[torch.nn.Parameter(torch.randn(50_000)), torch.nn.Parameter(torch.randn(7, 3))] for _ in range(2)]
        for p, q in zip(*params):
            q.data.copy_(p.data)
        kwargs = dict(lr=0.05, momentum=0.9) if {name!r} == "sgd" else dict(lr=1e-2)
        t_opt = getattr(torch.optim, {OPTIMIZERS[name][0].__name__!r})(params[0], **kwargs)
        f_opt = getattr(fusedlr, {OPTIMIZERS[name][1].__name__!r})(params[1], backend={backend!r}, **kwargs)
        for step in range(6):
            if step == 3:
                for opt in (t_opt, f_opt):
                    for st in opt.state.values():
                        for key in ("exp_avg", "momentum_buffer"):
                            if st.get(key) is not None:
                                st[key].data = st[key].data.clone()
            grads = [torch.randn_like(p) for p in params[0]]
            for ps in params:
                for p, g in zip(ps, grads):
                    p.grad = g.clone()
            t_opt.step()
            f_opt.step()
        for p, q in zip(*params):
            torch.testing.assert_close(q.detach(), p.detach(), rtol=1e-5, atol=1e-6)
        print("same as torch")
    """, backend)
    assert returncode == 0, stderr[-2000:]
    assert "same as torch" in stdout


def test_a_bucket_of_empty_tensors_still_ends_the_step(backend):
    params = [torch.nn.Parameter(torch.empty(0, device=device_for(backend))) for _ in range(2)]
    opt = fusedlr.AdamW(params, schedule=S.Step(1, 0.5), backend=backend)
    for _ in range(3):
        for p in params:
            p.grad = torch.empty_like(p)
        opt.step()
    assert int(opt.step_count) == 3 and float(opt.current_lr[0]) == pytest.approx(1e-3 * 0.5 ** 3)


@pytest.mark.parametrize("backend", ["cpu", "emulated"])
def test_compiled_steps_switching_between_param_sets_match_eager(backend):
    """Compiled steps keep one table set per set of params with grads; the CUDA
    kernels' values of the next update must follow whichever set ran last."""
    base = [torch.randn(300, dtype=torch.float64).float(), torch.randn(7, 3, dtype=torch.float64).float()]
    eager, compiled = clone_params(base), clone_params(base)
    schedule = S.with_warmup(S.Cosine(20), 3)
    e_opt = fusedlr.AdamW(eager, lr=1e-2, schedule=schedule, backend="reference")
    c_opt = fusedlr.AdamW(compiled, lr=1e-2, schedule=schedule, backend=backend)
    step = torch.compile(c_opt.step, backend="eager")
    for i, both in enumerate([True, False, True, True, False, True, True]):  # table sets A B A A B A A
        grads = grads_for_step(base, i, skip_every=1000)
        for params in (eager, compiled):
            set_grads(params, grads if both else [grads[0], None])
        e_opt.step()
        step()
    _assert_close(eager, compiled)


# ---- the kept plan's checks in bulk agree with the per-entry ones ----------------------
def _first_param(opt):
    return opt.param_groups[0]["params"][0]


BULK_EDITS = {
    "nothing": lambda opt, st: None,
    "grad resized": lambda opt, st: setattr(_first_param(opt).grad, "data", torch.ones(3)),
    "grad made half": lambda opt, st: setattr(_first_param(opt).grad, "data", torch.ones(4, 6).half()),
    "grad not contiguous": lambda opt, st: setattr(_first_param(opt), "grad", torch.randn(6, 4).t()),
    "grad removed": lambda opt, st: setattr(_first_param(opt), "grad", None),
    "param storage replaced": lambda opt, st: setattr(_first_param(opt), "data", torch.randn(4, 6)),
    "param transposed": lambda opt, st: setattr(_first_param(opt), "data", torch.randn(6, 4).t()),
    "state dict replaced": lambda opt, st: st.__setitem__(_first_param(opt), dict(st[_first_param(opt)])),
    "state tensor replaced": lambda opt, st: st[_first_param(opt)].__setitem__(
        "exp_avg", st[_first_param(opt)]["exp_avg"].clone()),
    "state storage replaced": lambda opt, st: setattr(st[_first_param(opt)]["exp_avg"], "data",
                                                      st[_first_param(opt)]["exp_avg"].clone()),
    "step written from the host": lambda opt, st: st[_first_param(opt)]["step"].add_(1),
    "grad made sparse": lambda opt, st: setattr(_first_param(opt), "grad", torch.randn(4, 6).to_sparse()),
    "param made non-contiguous in place": lambda opt, st: setattr(
        _first_param(opt), "data", _first_param(opt).data.as_strided((4, 6), (1, 4))),
    "param dtype reinterpreted": lambda opt, st: setattr(
        _first_param(opt).requires_grad_(False), "data", _first_param(opt).data.view(torch.int32)),
    # no mismatch: the entries take the new grads
    "grad replaced": lambda opt, st: setattr(_first_param(opt), "grad", torch.randn(4, 6)),
    # the plan's params, not an entry, changed
    "param without a grad gets one": lambda opt, st: setattr(opt.param_groups[0]["params"][-1], "grad",
                                                             torch.randn(4, 6)),
    "param appended to the group": lambda opt, st: opt.param_groups[0]["params"].append(
        torch.nn.Parameter(torch.randn(2))),
    "state mapping reset": lambda opt, st: setattr(opt, "state", collections.defaultdict(dict)),
}
ENTRY_EDITS_THAT_PASS = ("nothing", "grad replaced", "param without a grad gets one", "param appended to the group")


HOST_PATHS = ["python"] + (["libtorch"] if _native.host_module is not None else [])


@pytest.mark.parametrize("host_path", HOST_PATHS)
@pytest.mark.parametrize("edit", sorted(BULK_EDITS))
def test_the_bulk_checks_of_a_kept_plan_miss_nothing_the_entry_checks_see(edit, host_path, monkeypatch):
    """A kept plan checks its plain entries together (and the state mapping as
    a whole), in Python or in the libtorch host module, and trusts that check
    when it passes: it must fail wherever one Entry.reuse fails (a pass there
    would hand the kernels a stale pointer or size), and pass when nothing
    changed, each entry then holding its param's new grad."""
    if host_path == "python":
        monkeypatch.setattr(_native, "host_module", None)
    params = [torch.nn.Parameter(torch.randn(4, 6)) for _ in range(3)]
    without_grad = torch.nn.Parameter(torch.randn(4, 6))
    opt = fusedlr.AdamW(params + [without_grad], lr=1e-2,
                        backend="cpu" if "cpu" in fusedlr.available_backends() else "reference")
    for _ in range(2):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    for p in params:
        p.grad = torch.randn_like(p)
    [bucket] = [b for buckets in opt._plan.work.values() for b in buckets]
    bucket.reuse(opt.state)  # (builds the bulk view)
    BULK_EDITS[edit](opt, opt.state)
    assert (bucket._kept._host_checks is not None) == (host_path == "libtorch")
    bulk = opt._plan.same_params_and_state(opt) and bucket._kept.still_describe()
    if bulk:
        assert all(e.grad is p.grad and e.grad_ptr == p.grad.data_ptr() for e, p in zip(bucket.entries, params))
    one_by_one = all(e.reuse(opt.state) for e in bucket.entries)
    assert bulk == (edit in ("nothing", "grad replaced"))
    # a non-contiguous grad is no mismatch, only unusual: the entries take a contiguous copy
    assert one_by_one == (edit in ENTRY_EDITS_THAT_PASS + ("grad not contiguous",))


@pytest.mark.parametrize("host_path", HOST_PATHS)
def test_a_kept_plan_leaves_reference_cycles_to_the_collector(host_path, monkeypatch):
    """An optimizer reachable from its own params (a cycle through the kept
    plan's checks) is freed by the garbage collector on either host path."""
    if host_path == "python":
        monkeypatch.setattr(_native, "host_module", None)
    params = [torch.nn.Parameter(torch.randn(4)) for _ in range(3)]
    opt = fusedlr.AdamW(params, lr=1e-3, backend="cpu" if "cpu" in fusedlr.available_backends() else "reference")
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(4)
        opt.step()
    [bucket] = [b for buckets in opt._plan.work.values() for b in buckets]
    assert bucket._kept is not None and (bucket._kept._host_checks is not None) == (host_path == "libtorch")
    params[0].optimizer = opt
    alive = weakref.ref(opt)
    del opt, params, p, bucket
    gc.collect()
    assert alive() is None
