"""xattn.check_port on the seed notebook's own functions, written as the seed wrote them.

attn_eins2 and attn_eins3 are the same model (must pass); attn_fast_chatgpt reshapes the (H,E,D)
weights to (E, H·D) instead of transposing them: a wrong model that runs fine (must fail).
The sizes are smaller than the seed's (B=32, T=512, E=128, H=16, D=8) to keep the suite quick;
the code is the seed's, globals H and D included.
"""

import numpy as np
import pytest

import xattn
from xattn.porting.check import check_port
from xattn.porting.infer import infer_framework

from conftest import require_backend

try:
    require_backend("jax")
except pytest.skip.Exception as skip:  # the seed is JAX code: without JAX there is nothing to run
    pytest.skip(str(skip), allow_module_level=True)

import flax.nnx as nnx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from einops import einsum, rearrange  # noqa: E402

B = 2  # batch size
T = 32  # seq length
E = 32  # embedding dim
D = 8  # hidden dim
H = 4  # number of heads


def random_array(*shape, num: int = 1) -> jax.Array | list[jax.Array]:
    key = jax.random.split(jax.random.key(0), num=num)
    arr = [jax.random.uniform(key[i], shape=shape) for i in range(num)]
    return arr[0] if num == 1 else arr


X_BTE = random_array(B, T, E)
WQ_HED = random_array(H, E, D)
WK_HED = random_array(H, E, D)
WV_HED = random_array(H, E, D)
WO_GE = random_array(H * D, E)
SEED_INPUTS = (X_BTE, WQ_HED, WK_HED, WV_HED, WO_GE)


@jax.jit
def attn_eins2(X_BTE, WQ_HED, WK_HED, WV_HED, WO_GE):
    # G ~ H * D
    WQ_EG = rearrange(WQ_HED, 'h e d -> e (h d)')
    WK_EG = rearrange(WK_HED, 'h e d -> e (h d)')
    WV_EG = rearrange(WV_HED, 'h e d -> e (h d)')

    Q_BTHD = rearrange(X_BTE @ WQ_EG, 'b t (h d) -> b t h d', h=H)
    K_BTHD = rearrange(X_BTE @ WK_EG, 'b t (h d) -> b t h d', h=H)
    V_BTHD = rearrange(X_BTE @ WV_EG, 'b t (h d) -> b t h d', h=H)
    A_BHTT = einsum(Q_BTHD, K_BTHD, 'b tq h d, b tk h d -> b h tq tk')
    A_BHTT = nnx.softmax(A_BHTT / jnp.sqrt(D), axis=-1)

    H_BTHD = einsum(A_BHTT, V_BTHD, 'b h tq tk, b tk h d -> b tq h d')
    H_BTG = rearrange(H_BTHD, 'b t h d -> b t (h d)')
    return H_BTG @ WO_GE


@jax.jit
def attn_eins3(X_BTE, WQ_HED, WK_HED, WV_HED, WO_GE):
    Q_BTHD = einsum(X_BTE, WQ_HED, 'b t e, h e d -> b t h d')
    K_BTHD = einsum(X_BTE, WK_HED, 'b t e, h e d -> b t h d')
    V_BTHD = einsum(X_BTE, WV_HED, 'b t e, h e d -> b t h d')

    A_BHTT = einsum(Q_BTHD, K_BTHD, 'b tq h d, b tk h d -> b h tq tk')
    A_BHTT = nnx.softmax(A_BHTT / jnp.sqrt(D), axis=-1)

    H_BTHD = einsum(A_BHTT, V_BTHD, 'b h tq tk, b tk h d -> b tq h d')
    H_BTG = rearrange(H_BTHD, 'b t h d -> b t (h d)')
    return H_BTG @ WO_GE


@jax.jit
def attn_fast_chatgpt(X_BTE, WQ_HED, WK_HED, WV_HED, WO_GE):
    B, T, E = X_BTE.shape
    H, _, D = WQ_HED.shape

    # Pack heads -> 3 big GEMMs
    WQ_p = WQ_HED.reshape(E, H * D)
    WK_p = WK_HED.reshape(E, H * D)
    WV_p = WV_HED.reshape(E, H * D)

    Q = (X_BTE @ WQ_p).reshape(B, T, H, D)  # (B,T,H,D)
    K = (X_BTE @ WK_p).reshape(B, T, H, D)  # (B,T,H,D)
    V = (X_BTE @ WV_p).reshape(B, T, H, D)  # (B,T,H,D)

    # Explicit attention (no lax SDPA)
    scale = 1.0 / jnp.sqrt(D)
    scores = jnp.einsum('b t h d, b s h d -> b h t s', Q, K) * scale   # (B,H,T,S)
    probs  = jax.nn.softmax(scores, axis=-1)                           # (B,H,T,S)
    H_out  = jnp.einsum('b h t s, b s h d -> b t h d', probs, V)       # (B,T,H,D)

    Y_BTE = H_out.reshape(B, T, H * D) @ WO_GE                          # (B,T,E)
    return Y_BTE


def attn_reference(X_BTE, WQ_HED, WK_HED, WV_HED, WO_GE):
    """The same model in NumPy; dtype-preserving, so it doubles as the naive same-dtype computation."""
    Q_BTHD = np.einsum("BTE,HED->BTHD", X_BTE, WQ_HED)
    K_BSHD = np.einsum("BTE,HED->BTHD", X_BTE, WK_HED)
    V_BSHD = np.einsum("BTE,HED->BTHD", X_BTE, WV_HED)
    logits_BHTS = np.einsum("BTHD,BSHD->BHTS", Q_BTHD, K_BSHD) / np.sqrt(X_BTE.dtype.type(Q_BTHD.shape[-1]))
    P_BHTS = np.exp(logits_BHTS - logits_BHTS.max(axis=-1, keepdims=True))
    P_BHTS /= P_BHTS.sum(axis=-1, keepdims=True)
    O_BTHD = np.einsum("BHTS,BSHD->BTHD", P_BHTS, V_BSHD)
    return O_BTHD.reshape(*O_BTHD.shape[:2], -1) @ WO_GE


def test_eins2_is_a_faithful_port_of_eins3():
    report = check_port(attn_eins3, attn_eins2, *SEED_INPUTS, reference=attn_reference)
    assert report.ok, report
    assert report.frameworks == ("jax", "jax")
    assert report.pairs[0].attribution == "rounding noise"
    assert report.sides[0].budget.method == "naive"
    report.assert_ok()


def test_eins2_matches_eins3_without_a_reference_too():
    assert check_port(attn_eins3, attn_eins2, *SEED_INPUTS).ok


def test_fast_chatgpt_fails_and_is_blamed():
    report = check_port(attn_eins3, attn_fast_chatgpt, *SEED_INPUTS, reference=attn_reference)
    assert not report.ok
    verdicts = {side.name: side.verdict for side in report.sides}
    assert verdicts == {"attn_eins3": "ok", "attn_fast_chatgpt": "drift"}
    assert report.pairs[0].over_budget == ("attn_fast_chatgpt",)
    assert report.sides[1].drift.rel_l2_err > 1e-3  # the seed measured 1.7% at its own shape
    with pytest.raises(AssertionError) as failure:
        report.assert_ok()
    text = str(failure.value)
    assert "attn_fast_chatgpt over budget" in text and "max err" in text and "drift" in text


def test_fast_chatgpt_fails_without_a_reference():
    report = check_port(attn_eins3, attn_fast_chatgpt, *SEED_INPUTS)
    assert not report.ok and report.sides[0].budget.method == "tolerance"


def test_the_seed_torch_port_passes_across_frameworks():
    require_backend("torch")
    import torch  # noqa: F401
    from torch.nn import functional as F

    def attn_torch(X_BTE, WQ_HED, WK_HED, WV_HED, WO_GE):
        Q_BHTD = einsum(X_BTE, WQ_HED, 'b t e, h e d -> b h t d')
        K_BHTD = einsum(X_BTE, WK_HED, 'b t e, h e d -> b h t d')
        V_BHTE = einsum(X_BTE, WV_HED, 'b t e, h e d -> b h t d')
        H_BHTD = F.scaled_dot_product_attention(Q_BHTD, K_BHTD, V_BHTE)

        H_BTD = rearrange(H_BHTD, 'b h t d -> b t (h d)')
        Y_BTE = H_BTD @ WO_GE
        return Y_BTE

    report = check_port(attn_eins3, attn_torch, *SEED_INPUTS, reference=attn_reference)
    assert report.frameworks == ("jax", "torch")
    report.assert_ok()


def test_numpy_functions_and_tuple_outputs():
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)

    def good(x):
        return np.tanh(x), {"sum": x.sum(axis=0)}

    def bad(x):
        return np.tanh(x) * 1.01, {"sum": x.sum(axis=0)}

    def ref(x):
        return np.tanh(x), {"sum": x.sum(axis=0)}

    report = check_port(good, bad, x, reference=ref)
    assert [(s.name, s.output, s.verdict) for s in report.sides] == [
        ("good", "out[0]", "ok"), ("bad", "out[0]", "drift"), ("good", "out[1]['sum']", "ok"),
        ("bad", "out[1]['sum']", "ok")]
    assert report.frameworks == ("numpy", "numpy")


def test_float16_inputs_use_the_reference_as_the_naive_computation():
    x = np.linspace(-3, 3, 64).astype(np.float16)
    report = check_port(np.tanh, lambda x: np.tanh(x.astype(np.float32)).astype(np.float16), x, reference=np.tanh,
                        names=("numpy", "upcast"))
    assert report.dtype == "float16" and report.sides[0].budget.method == "naive"
    assert report.ok, report


def test_structure_and_argument_errors():
    x = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="same structure"):
        check_port(lambda x: x, lambda x: (x, x), x)
    with pytest.raises(ValueError, match="equal shapes"):
        check_port(lambda x: x, lambda x: x[:2], x)
    with pytest.raises(ValueError, match="frameworks: expected two of jax, torch, numpy"):
        check_port(np.tanh, np.tanh, x, frameworks=("jax", "mxnet"))
    with pytest.raises(ValueError, match="names: expected two names"):
        check_port(np.tanh, np.tanh, x, names=("only",))


def test_infer_framework():
    assert infer_framework(attn_eins3) == "jax"
    assert infer_framework(attn_reference) == "numpy"
    assert infer_framework(lambda x: jnp.tanh(x)) == "jax"
    assert infer_framework(lambda x: nnx.softmax(x)) == "jax"
    torch = require_backend("torch").torch
    assert infer_framework(lambda x: torch.tanh(x)) == "torch"
    assert infer_framework(torch.nn.Linear(2, 2)) == "torch"
    with pytest.raises(ValueError, match="refers to both"):
        infer_framework(lambda x: torch.tanh(jnp.tanh(x)))


def test_exported_from_the_package():
    assert xattn.check_port is check_port
    assert xattn.DriftReport.__name__ == "DriftReport"
