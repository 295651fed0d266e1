"""One Triton kernel for a whole pre-norm local-awareness block (forward).

    y = x + proj(attn(LN1(x)));   y = y + fc2(gelu(fc1(LN2(y))))

with `attn` temporal (a sequence = one joint of one clip, its members = frames) or grouped (a
sequence = one joint group of one frame, its members = the group's joints). Every token belongs to
exactly one sequence, and a sequence's tokens are all the attention needs, so one program can take a
tile of whole sequences from its input rows to its output rows with nothing in between: x is read
once, y written once, and the block's weights (8.5k parameters at C = 32) are read from L2 by every
program.

Tile: BLOCK_S sequences x BLOCK_M members = R rows (row r: sequence r // BLOCK_M, member
r % BLOCK_M). The member -> token offset comes from a small int32 table `[G, BLOCK_M]` (-1 =
padding), with token = outer * OUTER_STRIDE + inner * INNER_STRIDE + table[inner % G, member] for
sequence s = outer * INNER + inner:

* temporal on `[B, F, N, C]`: INNER = N, OUTER_STRIDE = F * N, INNER_STRIDE = 1, G = 1, table
  row = [0, N, 2N, ...] (frames);
* grouped on `[B*F, N, C]`: INNER = G, OUTER_STRIDE = N, INNER_STRIDE = 0, table rows = the groups.

All linear layers are `tl.dot` on `[R, C]` tiles. Attention runs one head at a time as dense `[R, R]`
scores masked to "same sequence, allowed member distance": at these sizes (D = 4, sequences of 3-9
rows) tensor-core products with mostly masked entries are cheaper than CUDA-core loops, and the head's
q, k, v come straight from `LN1(x) @ W[head rows]` with D padded to 16 (tl.dot's minimum) by zero
weights, so no register tile is ever sliced. Softmax in fp32 (exp2, scale * log2(e) folded into q);
LayerNorm in fp32; products in the input dtype with fp32 accumulation (exact fp32 for fp32 inputs).
"""
import triton
import triton.language as tl

_SQRT1_2 = tl.constexpr(0.7071067811865476)


@triton.jit
def _mm(a, b, acc, PRECISION: tl.constexpr, DOT_F32: tl.constexpr):
    """`a @ b (+ acc)` with fp32 accumulation. DOT_F32 multiplies already-rounded operands in fp32: the
    CPU interpreter's bf16 tl.dot is wrong (it multiplies the raw bits), and bf16 x bf16 products are
    exact in fp32, so only the summation order differs from a tensor-core dot."""
    if DOT_F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc=acc, input_precision="ieee")
    return tl.dot(a, b, acc=acc, input_precision=PRECISION)


@triton.jit
def _layer_norm(b_x, m_c, w, b, o_c, C, eps):
    """Row-wise LayerNorm of an fp32 `[R, BLOCK_C]` tile (padding columns stay 0)."""
    mean = tl.sum(b_x, axis=1) / C
    b_xc = tl.where(m_c[None, :], b_x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(b_xc * b_xc, axis=1) / C + eps)
    b_w = tl.load(w + o_c, mask=m_c, other=0.0).to(tl.float32)
    b_b = tl.load(b + o_c, mask=m_c, other=0.0).to(tl.float32)
    return b_xc * rstd[:, None] * b_w[None, :] + b_b[None, :]


@triton.jit
def _head_projection(b_xn, w, bias, row0, o_c, m_c, o_d, m_d, C, HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
                     DOT_F32: tl.constexpr):
    """`xn @ W[row0 + d, :]^T (+ bias)` for the D rows of one head: fp32 `[R, BLOCK_D]` (padding 0)."""
    b_w = tl.load(w + (row0 + o_d)[None, :] * C + o_c[:, None], mask=m_c[:, None] & m_d[None, :], other=0.0)
    b_y = _mm(b_xn, b_w, None, PRECISION, DOT_F32)
    if HAS_BIAS:
        b_y += tl.load(bias + row0 + o_d, mask=m_d, other=0.0).to(tl.float32)[None, :]
    return b_y


@triton.jit(do_not_specialize=["S", "INNER", "G", "OUTER_STRIDE", "INNER_STRIDE", "C", "HID", "window", "lo"])
def _block_fwd_kernel(
    x,  # [T, C] input tokens, contiguous
    y,  # [T, C] output tokens, contiguous
    tab,  # [G, BLOCK_M] int32 token offset of each member of a sequence, -1 = padding
    ln1_w, ln1_b,  # [C]
    qkv_w, qkv_b,  # [3C, C], [3C] (qkv_b unused without HAS_QKV_BIAS)
    proj_w, proj_b,  # [C, C], [C]
    ln2_w, ln2_b,  # [C]
    fc1_w, fc1_b,  # [HID, C], [HID]
    fc2_w, fc2_b,  # [C, HID], [C]
    S,  # number of sequences
    INNER,  # sequences per outer index
    G,  # rows of tab
    OUTER_STRIDE,  # tokens between consecutive outer indices
    INNER_STRIDE,  # tokens between consecutive inner indices
    C,  # channels
    HID,  # MLP hidden width
    window,  # largest allowed member distance m_i - m_j
    lo,  # smallest allowed member distance (-window, or 0 when causal)
    eps1, eps2,  # LayerNorm epsilons
    qk_scale,  # head_dim ** -0.5 * log2(e)
    HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HAS_QKV_BIAS: tl.constexpr,
    PRECISION: tl.constexpr,  # tl.dot input precision: "ieee" for fp32 inputs
    DOT_F32: tl.constexpr,  # products in fp32 (bf16 under the CPU interpreter, see _mm)
    BLOCK_S: tl.constexpr,  # sequences per program
    BLOCK_M: tl.constexpr,  # members per sequence (power of two)
    BLOCK_C: tl.constexpr,  # channels (power of two, >= 16)
    BLOCK_D: tl.constexpr,  # head dim (power of two, >= 16)
    BLOCK_HC: tl.constexpr,  # MLP hidden chunk (power of two, >= 16)
):
    R: tl.constexpr = BLOCK_S * BLOCK_M
    o_r = tl.arange(0, R)
    o_c = tl.arange(0, BLOCK_C)
    o_d = tl.arange(0, BLOCK_D)
    m_c = o_c < C
    m_d = o_d < HEAD_DIM

    # rows -> sequences, members, tokens
    o_s = tl.program_id(0) * BLOCK_S + o_r // BLOCK_M
    i_m = o_r % BLOCK_M
    i_in = o_s % INNER
    member = tl.load(tab + (i_in % G) * BLOCK_M + i_m, mask=o_s < S, other=-1)
    m_r = (o_s < S) & (member >= 0)
    token = (o_s // INNER).to(tl.int64) * OUTER_STRIDE + i_in.to(tl.int64) * INNER_STRIDE + member
    p_rows = token[:, None] * C + o_c[None, :]
    m_rc = m_r[:, None] & m_c[None, :]
    b_x = tl.load(x + p_rows, mask=m_rc, other=0.0).to(tl.float32)
    dt = x.dtype.element_ty

    # attention: which keys each row may see (same sequence, member distance in [lo, window])
    same = (o_r[:, None] // BLOCK_M) == (o_r[None, :] // BLOCK_M)
    dist = i_m[:, None] - i_m[None, :]
    m_att = same & m_r[None, :] & (dist >= lo) & (dist <= window)

    b_xn = _layer_norm(b_x, m_c, ln1_w, ln1_b, o_c, C, eps1).to(dt)
    b_att = tl.zeros([R, BLOCK_C], tl.float32)
    for h in range(HEADS):  # a runtime loop: unrolling 8 heads keeps every head's weights live
        row0 = h * HEAD_DIM
        b_q = _head_projection(b_xn, qkv_w, qkv_b, row0, o_c, m_c, o_d, m_d, C, HAS_QKV_BIAS, PRECISION, DOT_F32)
        b_k = _head_projection(b_xn, qkv_w, qkv_b, C + row0, o_c, m_c, o_d, m_d, C, HAS_QKV_BIAS, PRECISION, DOT_F32)
        b_v = _head_projection(b_xn, qkv_w, qkv_b, 2 * C + row0, o_c, m_c, o_d, m_d, C, HAS_QKV_BIAS, PRECISION, DOT_F32)
        # q, k, v are rounded to the input dtype, as the unfused layer's Linear output is
        b_q = b_q.to(dt).to(tl.float32) * qk_scale
        b_s = _mm(b_q.to(dt), tl.trans(b_k.to(dt)), None, PRECISION, DOT_F32)
        b_s = tl.where(m_att, b_s, float("-inf"))
        b_max = tl.max(b_s, axis=1)
        b_max = tl.where(b_max == float("-inf"), 0.0, b_max)  # padding rows see nothing
        b_p = tl.exp2(b_s - b_max[:, None])
        b_l = tl.sum(b_p, axis=1)
        b_l = tl.where(b_l == 0.0, 1.0, b_l)
        # p @ v over the whole tile multiplies every masked p = 0 (other sequences included) by every
        # row of v, and 0 x NaN = NaN: select non-finite values out of v for the product, then make
        # the rows of their own sequence non-finite again, exactly as the unfused op leaves them
        m_vf = (b_v == b_v) & (tl.abs(b_v) < float("inf"))  # [R, BLOCK_D] finite
        b_o = _mm(b_p.to(dt), tl.where(m_vf, b_v, 0.0).to(dt), None, PRECISION, DOT_F32) / b_l[:, None]
        if tl.sum(tl.where(m_vf, 0, 1)) > 0:  # rare: a runtime branch keeps the clean path as it was
            b_bad = _mm(same.to(dt), tl.where(m_vf, 0.0, 1.0).to(dt), None, PRECISION, DOT_F32)
            b_o = tl.where(b_bad > 0, float("nan"), b_o)
        # this head's slice of the output projection: proj_w[co, row0 + d] as [BLOCK_D, BLOCK_C]
        b_wp = tl.load(proj_w + o_c[None, :] * C + (row0 + o_d)[:, None], mask=m_d[:, None] & m_c[None, :], other=0.0)
        b_att = _mm(b_o.to(dt), b_wp, b_att, PRECISION, DOT_F32)
    b_att += tl.load(proj_b + o_c, mask=m_c, other=0.0).to(tl.float32)[None, :]
    # the unfused layer adds a dtype-rounded projection to x and rounds the sum
    b_x = (b_x + b_att.to(dt).to(tl.float32)).to(dt).to(tl.float32)

    # MLP, hidden units in chunks of BLOCK_HC
    b_xn = _layer_norm(b_x, m_c, ln2_w, ln2_b, o_c, C, eps2).to(dt)
    b_mlp = tl.zeros([R, BLOCK_C], tl.float32)
    o_j = tl.arange(0, BLOCK_HC)
    for j0 in range(0, HID, BLOCK_HC):
        m_j = (j0 + o_j) < HID
        b_w1 = tl.load(fc1_w + (j0 + o_j)[None, :] * C + o_c[:, None], mask=m_c[:, None] & m_j[None, :], other=0.0)
        b_h = _mm(b_xn, b_w1, None, PRECISION, DOT_F32)
        b_h += tl.load(fc1_b + j0 + o_j, mask=m_j, other=0.0).to(tl.float32)[None, :]
        b_h = b_h.to(dt).to(tl.float32)
        b_h = 0.5 * b_h * (1.0 + tl.math.erf(b_h * _SQRT1_2))  # exact GELU, as nn.GELU()
        b_w2 = tl.load(fc2_w + o_c[None, :] * HID + (j0 + o_j)[:, None], mask=m_j[:, None] & m_c[None, :], other=0.0)
        b_mlp = _mm(b_h.to(dt), b_w2, b_mlp, PRECISION, DOT_F32)
    b_mlp += tl.load(fc2_b + o_c, mask=m_c, other=0.0).to(tl.float32)[None, :]
    b_y = b_x + b_mlp.to(dt).to(tl.float32)
    tl.store(y + p_rows, b_y.to(dt), mask=m_rc)
