"""Schedules as their home libraries document them (Hugging Face transformers,
Keras, optax, timm, fastai/Lightning), written as plain Python over one step.
These are the oracles for the families torch does not have."""
import math


# ---- Hugging Face transformers.optimization -------------------------------
def hf_warmup(t, W):
    return t / max(1, W)


def hf_linear(t, W, total):
    if t < W:
        return hf_warmup(t, W)
    return max(0.0, (total - t) / max(1, total - W))


def hf_cosine(t, W, total, num_cycles=0.5):
    if t < W:
        return hf_warmup(t, W)
    progress = (t - W) / max(1, total - W)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress)))


def hf_cosine_with_min_lr(t, W, total, num_cycles=0.5, min_lr_rate=0.0):
    if t < W:
        return hf_warmup(t, W)
    progress = (t - W) / max(1, total - W)
    factor = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
    return max(0.0, factor * (1 - min_lr_rate) + min_lr_rate)


def hf_cosine_hard_restarts(t, W, total, num_cycles=1):
    if t < W:
        return hf_warmup(t, W)
    progress = (t - W) / max(1, total - W)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((num_cycles * progress) % 1.0))))


def hf_polynomial(t, W, total, lr_init, lr_end=1e-7, power=1.0):
    if t < W:
        return hf_warmup(t, W)
    if t > total:
        return lr_end / lr_init
    decay_steps = total - W
    pct_remaining = 1 - (t - W) / decay_steps
    return ((lr_init - lr_end) * pct_remaining ** power + lr_end) / lr_init


def hf_constant_with_warmup(t, W):
    return hf_warmup(t, W) if t < W else 1.0


def hf_inverse_sqrt(t, W, timescale=None):
    if timescale is None:
        timescale = W or 10_000
    if t < W:
        return hf_warmup(t, W)
    shift = timescale - W
    return 1.0 / math.sqrt((t + shift) / timescale)


def hf_wsd(t, W, S, D, warmup_type="linear", decay_type="cosine", min_lr_ratio=0.0, num_cycles=0.5):
    if t < W:
        progress = t / max(1, W)
        if warmup_type == "linear":
            factor = progress
        elif warmup_type == "cosine":
            factor = 0.5 * (1.0 - math.cos(math.pi * progress))
        else:
            factor = 1.0 - math.sqrt(1.0 - progress)
        return max(0.0, factor * (1.0 - min_lr_ratio) + min_lr_ratio)
    if t < W + S:
        return 1.0
    if t < W + S + D:
        progress = (t - W - S) / max(1, D)
        if decay_type == "linear":
            factor = 1.0 - progress
        elif decay_type == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
        else:
            factor = 1.0 - math.sqrt(progress)
        return max(0.0, factor * (1.0 - min_lr_ratio) + min_lr_ratio)
    return min_lr_ratio


# ---- Keras (keras.optimizers.schedules) ----------------------------------
def keras_polynomial(t, lr0, decay_steps, end_lr=1e-4, power=1.0, cycle=False):
    if cycle:
        multiplier = 1.0 if t == 0 else math.ceil(t / decay_steps)
        decay_steps = decay_steps * multiplier
    else:
        t = min(t, decay_steps)
    return (lr0 - end_lr) * (1 - t / decay_steps) ** power + end_lr


def keras_inverse_time(t, lr0, decay_steps, decay_rate, staircase=False):
    p = t / decay_steps
    if staircase:
        p = math.floor(p)
    return lr0 / (1 + decay_rate * p)


def keras_cosine_restarts(t, lr0, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0):
    """Returns (lr, completed cycle count as Keras computes it)."""
    completed = t / first_decay_steps
    if t_mul == 1.0:
        i = math.floor(completed)
        completed -= i
    else:
        i = math.floor(math.log(1.0 - completed * (1.0 - t_mul)) / math.log(t_mul))
        sum_r = (1.0 - t_mul ** i) / (1.0 - t_mul)
        completed = (completed - sum_r) / t_mul ** i
    cosine = 0.5 * m_mul ** i * (1.0 + math.cos(math.pi * completed))
    return lr0 * ((1 - alpha) * cosine + alpha)


# ---- optax ------------------------------------------------------------------
def optax_exponential(t, init, transition_steps, decay_rate, transition_begin=0, staircase=False, end_value=None):
    count = t - transition_begin
    if count <= 0:
        value = init
    else:
        p = count / transition_steps
        if staircase:
            p = math.floor(p)
        value = init * decay_rate ** p
    if end_value is not None:
        value = max(value, end_value) if decay_rate < 1 else min(value, end_value)
    return value


def optax_cosine_decay(t, init, decay_steps, alpha=0.0, exponent=1.0):
    count = min(t, decay_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * count / decay_steps))
    return init * ((1 - alpha) * cosine ** exponent + alpha)


def optax_piecewise_constant(t, init, boundaries_and_scales):
    value = init
    for boundary, scale in sorted(boundaries_and_scales.items()):
        if t >= boundary:
            value *= scale
    return value


def optax_join(t, schedules, boundaries):
    value = schedules[0](t)
    for boundary, schedule in zip(boundaries, schedules[1:]):
        if t >= boundary:
            value = schedule(t - boundary)
    return value


# ---- timm CosineLRScheduler (k_decay = 1, no warmup) -----------------------
def timm_cosine(t, base, t_initial, lr_min=0.0, cycle_mul=1.0, cycle_decay=1.0, cycle_limit=1):
    if cycle_mul != 1:
        i = math.floor(math.log(1 - t / t_initial * (1 - cycle_mul), cycle_mul))
        t_i = cycle_mul ** i * t_initial
        t_curr = t - (1 - cycle_mul ** i) / (1 - cycle_mul) * t_initial
    else:
        i = t // t_initial
        t_i = t_initial
        t_curr = t - t_initial * i
    lr_max = base * cycle_decay ** i
    if i < cycle_limit:
        return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * t_curr / t_i))
    return lr_min


# ---- LR range test (fastai / Lightning lr_find) ----------------------------
def range_test(t, start, end, num_iter, linear=False):
    r = min(t / num_iter, 1.0)
    return start + r * (end - start) if linear else start * (end / start) ** r


# ---- Noam (Vaswani et al. 2017) ---------------------------------------------
def noam(t, d_model, warmup):
    s = t + 1
    return d_model ** -0.5 * min(s ** -0.5, s * warmup ** -1.5)
