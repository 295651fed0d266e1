"""The two Triton kernels behind both ops: softmax attention inside many short sequences.

Temporal and grouped attention are the same computation seen along different axes. Write the
`[B, F, N, H, D]` inputs as `[B, C, M, H, D]` with a *batched* axis C and a *member* axis M:

* temporal: C = N (one sequence per clip and token), M = F (its frames);
* grouped:  C = F (one sequence per clip, frame and group), M = N (tokens, picked by the group).

A sequence is `(b, c, g)`, `g` one of the G groups of the member axis (G = 1 for temporal). Its rows
are listed in small int32 tables `[G, T]` (member index per row, -1 = padding), so unequal groups,
the frames a query may see and the frames whose output is wanted are all table look-ups: no dense
mask exists. On top of the tables a row i may attend a key j only if
`lo <= m_i - m_j <= window` (`lo = -window`, or 0 when causal); grouped attention passes a window
that allows everything.

One program owns BLOCK_S sequences and loops over head blocks of BLOCK_H heads; its register tiles
are `[BLOCK_R, BLOCK_S, BLOCK_H, BLOCK_D]` (R = rows; rows first so that Triton spreads the warps
over sequences). Keys are visited one member at a time with an online softmax, and every reduction
(over D for scores, over rows for dk/dv) is a broadcast multiply and `tl.sum` on CUDA cores: D and
the sequence length are far below `tl.dot`'s minimum K. Math is float32 in the log2 domain (`exp2`,
q pre-scaled by `scale * log2(e)`).

The backward recomputes the probabilities from q and k (a sequence fits in registers), so the
forward stores nothing but its output: pass 1 gets the row max, the normaliser and
`delta_i = sum_j p_ij dp_ij` online; pass 2 forms `ds = p * (dp - delta)` and writes dk, dv of each
key as it goes, dq at the end. README.md next to this file has the math.
"""
import triton
import triton.language as tl

_LN2 = tl.constexpr(0.6931471805599453)  # 1 / log2(e): undoes the log2(e) folded into the pre-scaled q
_NO_ROW = tl.constexpr(-(1 << 30))  # member index given to rows that query nothing: outside every window


@triton.jit
def _load_key(
    k,  # [B, C, M, H, D] keys
    v,  # [B, C, M, H, D] values
    tab_k,  # [G, T] int32 member index of each key column, -1 = padding
    o_tk,  # [BLOCK_S] offset of each sequence's row of tab_k
    j,  # key column
    m_s,  # [BLOCK_S] valid sequences
    o_ks,  # [BLOCK_S] int64 offset of each sequence in k
    o_vs,  # [BLOCK_S] int64 offset of each sequence in v
    stride_km,  # k member stride
    stride_vm,  # v member stride
    o_khd,  # [1, BLOCK_H, BLOCK_D] head-block offsets in k
    o_vhd,  # [1, BLOCK_H, BLOCK_D] head-block offsets in v
    m_khd,  # [1, BLOCK_H, BLOCK_D] valid heads and dims
):
    """Member index ``[BLOCK_S]`` (-1 = none) and fp32 ``k, v [BLOCK_S, BLOCK_H, BLOCK_D]`` of key column j."""
    b_mk = tl.load(tab_k + o_tk + j, mask=m_s, other=-1)
    m_kt = (b_mk >= 0)[:, None, None] & m_khd
    b_mk64 = b_mk.to(tl.int64)
    b_k = tl.load(k + (o_ks + b_mk64 * stride_km)[:, None, None] + o_khd, mask=m_kt, other=0.0)
    b_v = tl.load(v + (o_vs + b_mk64 * stride_vm)[:, None, None] + o_vhd, mask=m_kt, other=0.0)
    return b_mk, b_k.to(tl.float32), b_v.to(tl.float32)


@triton.jit
def _scores(
    b_q,  # [BLOCK_R, BLOCK_S, BLOCK_H, BLOCK_D] queries pre-scaled by scale * log2(e)
    b_k,  # [BLOCK_S, BLOCK_H, BLOCK_D] key j
    b_mq,  # [BLOCK_R, BLOCK_S] member of each query row (_NO_ROW = none)
    b_mk,  # [BLOCK_S] member of key j (-1 = none)
    lo,  # smallest allowed m_i - m_j (-window, or 0 when causal)
    window,  # largest allowed m_i - m_j
):
    """``[BLOCK_R, BLOCK_S, BLOCK_H]`` scores of key j in log2 units, -inf where the key is not allowed."""
    b_dist = b_mq - b_mk[None, :]
    m_a = (b_mk >= 0)[None, :] & (b_dist >= lo) & (b_dist <= window)
    b_s = tl.sum(b_q * b_k[None, :, :, :], axis=3)
    return tl.where(m_a[:, :, None], b_s, float("-inf"))


@triton.jit
def _sequence_ids(S, C, G, BLOCK_S: tl.constexpr):
    """This program's BLOCK_S sequences: offsets, validity, and their (group, batched index, batch)."""
    o_s = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    i_g = o_s % G
    i_c = ((o_s // G) % C).to(tl.int64)
    i_b = (o_s // (G * C)).to(tl.int64)
    return o_s, o_s < S, i_g, i_c, i_b


# sizes and masks change from call to call; Triton's ==1 / %16 specialisation buys nothing on them
@triton.jit(do_not_specialize=["S", "C", "G", "H", "D", "TQ", "key_lo", "key_hi", "window", "causal"])
def _local_attn_fwd_kernel(
    q,  # [B, C, M, H, D] queries, any strides
    k,  # [B, C, M, H, D] keys
    v,  # [B, C, M, H, D] values
    o,  # [B, C, MO, H, D] output (MO = output members)
    tab_q,  # [G, TQ] int32: member index of query row i of group g, -1 = padding
    tab_o,  # [G, TQ] int32: output member index of query row i (-1 = not stored)
    tab_k,  # [G, TK] int32: member index of key j of group g, -1 = padding
    stride_qb, stride_qc, stride_qm, stride_qh, stride_qd,  # q strides along [B, C, M, H, D]
    stride_kb, stride_kc, stride_km, stride_kh, stride_kd,  # k strides
    stride_vb, stride_vc, stride_vm, stride_vh, stride_vd,  # v strides
    stride_ob, stride_oc, stride_om, stride_oh, stride_od,  # o strides
    stride_tq,  # row stride of tab_q and tab_o
    stride_tk,  # row stride of tab_k
    S,  # number of sequences B * C * G
    C,  # length of the batched axis
    G,  # groups per (b, c)
    H,  # heads
    D,  # head dim
    TQ,  # query rows per group (columns of tab_q)
    key_lo,  # first key column visited
    key_hi,  # one past the last key column visited
    window,  # allowed |m_i - m_j|
    causal,  # 1: also require m_j <= m_i
    qk_scale,  # scale * log2(e)
    BLOCK_S: tl.constexpr,  # sequences per program
    BLOCK_R: tl.constexpr,  # query rows, next power of two of TQ
    BLOCK_H: tl.constexpr,  # heads per head block
    BLOCK_D: tl.constexpr,  # next power of two of D
):
    o_s, m_s, i_g, i_c, i_b = _sequence_ids(S, C, G, BLOCK_S)
    o_r = tl.arange(0, BLOCK_R)
    o_h = tl.arange(0, BLOCK_H)
    o_d = tl.arange(0, BLOCK_D)
    m_r = (o_r < TQ)[:, None] & m_s[None, :]  # [BLOCK_R, BLOCK_S]
    o_tr = o_r[:, None] + (i_g * stride_tq)[None, :]
    o_tk = i_g * stride_tk
    lo = -window * (1 - causal)

    for i_h in range(0, H, BLOCK_H):
        o_hh = i_h + o_h
        m_hd = (o_hh < H)[:, None] & (o_d < D)[None, :]  # [BLOCK_H, BLOCK_D]
        b_mq = tl.load(tab_q + o_tr, mask=m_r, other=-1)  # [BLOCK_R, BLOCK_S] member of each query row
        m_q = b_mq >= 0
        p_q = q + (i_b * stride_qb + i_c * stride_qc)[None, :, None, None] + (
            b_mq.to(tl.int64) * stride_qm
        )[:, :, None, None] + (o_hh[:, None] * stride_qh + o_d[None, :] * stride_qd)[None, None, :, :]
        b_q = tl.load(p_q, mask=m_q[:, :, None, None] & m_hd[None, None, :, :], other=0.0)
        b_q = b_q.to(tl.float32) * qk_scale  # [R, S, H, D]
        b_mq = tl.where(m_q, b_mq, _NO_ROW)

        o_ks = i_b * stride_kb + i_c * stride_kc  # [BLOCK_S]
        o_vs = i_b * stride_vb + i_c * stride_vc
        o_khd = (o_hh[:, None] * stride_kh + o_d[None, :] * stride_kd)[None, :, :]
        o_vhd = (o_hh[:, None] * stride_vh + o_d[None, :] * stride_vd)[None, :, :]
        m_khd = m_hd[None, :, :]
        b_m = tl.full([BLOCK_R, BLOCK_S, BLOCK_H], -1e30, tl.float32)  # running max (log2 units)
        b_l = tl.zeros([BLOCK_R, BLOCK_S, BLOCK_H], tl.float32)  # running normaliser
        b_acc = tl.zeros([BLOCK_R, BLOCK_S, BLOCK_H, BLOCK_D], tl.float32)
        for j in range(key_lo, key_hi):
            b_mk, b_k, b_v = _load_key(
                k, v, tab_k, o_tk, j, m_s, o_ks, o_vs, stride_km, stride_vm, o_khd, o_vhd, m_khd
            )
            b_s = _scores(b_q, b_k, b_mq, b_mk, lo, window)  # [R, S, H]
            b_mn = tl.maximum(b_m, b_s)
            b_alpha = tl.exp2(b_m - b_mn)
            b_p = tl.exp2(b_s - b_mn)
            b_l = b_l * b_alpha + b_p
            b_acc = b_acc * b_alpha[:, :, :, None] + b_p[:, :, :, None] * b_v[None, :, :, :]
            b_m = b_mn

        b_o = b_acc / tl.where(b_l > 0, b_l, 1.0)[:, :, :, None]
        b_mo = tl.load(tab_o + o_tr, mask=m_r, other=-1)  # [BLOCK_R, BLOCK_S] output member
        p_o = o + (i_b * stride_ob + i_c * stride_oc)[None, :, None, None] + (
            b_mo.to(tl.int64) * stride_om
        )[:, :, None, None] + (o_hh[:, None] * stride_oh + o_d[None, :] * stride_od)[None, None, :, :]
        tl.store(p_o, b_o.to(p_o.dtype.element_ty), mask=(b_mo >= 0)[:, :, None, None] & m_hd[None, None, :, :])


@triton.jit(do_not_specialize=["S", "C", "G", "H", "D", "TM", "key_lo", "key_hi", "window", "causal"])
def _local_attn_bwd_kernel(
    q,  # [B, C, M, H, D] queries, any strides
    k,  # [B, C, M, H, D] keys
    v,  # [B, C, M, H, D] values
    do,  # [B, C, MG, H, D] output gradient, any strides (stride 0 included)
    dq,  # [B, C, M, H, D] query gradient
    dk,  # [B, C, M, H, D] key gradient
    dv,  # [B, C, M, H, D] value gradient
    tab_m,  # [G, TM] int32: member index of row (and key) i of group g, -1 = padding
    tab_g,  # [G, TM] int32: row of `do` holding the gradient of row i, -1 = none (dq = 0 there)
    stride_qb, stride_qc, stride_qm, stride_qh, stride_qd,  # q strides along [B, C, M, H, D]
    stride_kb, stride_kc, stride_km, stride_kh, stride_kd,  # k strides
    stride_vb, stride_vc, stride_vm, stride_vh, stride_vd,  # v strides
    stride_gb, stride_gc, stride_gm, stride_gh, stride_gd,  # do strides
    stride_xb, stride_xc, stride_xm, stride_xh, stride_xd,  # strides shared by dq, dk, dv
    stride_t,  # row stride of tab_m and tab_g
    S,  # number of sequences B * C * G
    C,  # length of the batched axis
    G,  # groups per (b, c)
    H,  # heads
    D,  # head dim
    TM,  # rows per group (columns of tab_m)
    key_lo,  # first key column a query with a gradient can see
    key_hi,  # one past the last such key column
    window,  # allowed |m_i - m_j|
    causal,  # 1: also require m_j <= m_i
    qk_scale,  # scale * log2(e)
    scale,  # scale
    BLOCK_S: tl.constexpr,  # sequences per program
    BLOCK_R: tl.constexpr,  # rows, next power of two of TM
    BLOCK_H: tl.constexpr,  # heads per head block
    BLOCK_D: tl.constexpr,  # next power of two of D
):
    o_s, m_s, i_g, i_c, i_b = _sequence_ids(S, C, G, BLOCK_S)
    o_r = tl.arange(0, BLOCK_R)
    o_h = tl.arange(0, BLOCK_H)
    o_d = tl.arange(0, BLOCK_D)
    m_r = (o_r < TM)[:, None] & m_s[None, :]  # [BLOCK_R, BLOCK_S]
    o_tr = o_r[:, None] + (i_g * stride_t)[None, :]
    o_tk = i_g * stride_t
    lo = -window * (1 - causal)

    for i_h in range(0, H, BLOCK_H):
        o_hh = i_h + o_h
        m_hd = (o_hh < H)[:, None] & (o_d < D)[None, :]  # [BLOCK_H, BLOCK_D]
        b_mq = tl.load(tab_m + o_tr, mask=m_r, other=-1)  # [BLOCK_R, BLOCK_S] member of each row
        b_mg = tl.load(tab_g + o_tr, mask=m_r, other=-1)  # [BLOCK_R, BLOCK_S] its gradient row
        m_q = b_mq >= 0
        m_g = m_q & (b_mg >= 0)  # rows that are queries; the others only serve as keys
        p_q = q + (i_b * stride_qb + i_c * stride_qc)[None, :, None, None] + (
            b_mq.to(tl.int64) * stride_qm
        )[:, :, None, None] + (o_hh[:, None] * stride_qh + o_d[None, :] * stride_qd)[None, None, :, :]
        b_q = tl.load(p_q, mask=m_q[:, :, None, None] & m_hd[None, None, :, :], other=0.0)
        b_q = b_q.to(tl.float32) * qk_scale  # [R, S, H, D]
        p_do = do + (i_b * stride_gb + i_c * stride_gc)[None, :, None, None] + (
            b_mg.to(tl.int64) * stride_gm
        )[:, :, None, None] + (o_hh[:, None] * stride_gh + o_d[None, :] * stride_gd)[None, None, :, :]
        b_do = tl.load(p_do, mask=m_g[:, :, None, None] & m_hd[None, None, :, :], other=0.0).to(tl.float32)
        b_mq = tl.where(m_g, b_mq, _NO_ROW)  # rows without a gradient attend nothing

        o_ks = i_b * stride_kb + i_c * stride_kc  # [BLOCK_S]
        o_vs = i_b * stride_vb + i_c * stride_vc
        o_khd = (o_hh[:, None] * stride_kh + o_d[None, :] * stride_kd)[None, :, :]
        o_vhd = (o_hh[:, None] * stride_vh + o_d[None, :] * stride_vd)[None, :, :]
        m_khd = m_hd[None, :, :]

        # pass 1: row max, normaliser and delta = rowsum(p * dp), all online
        b_m = tl.full([BLOCK_R, BLOCK_S, BLOCK_H], -1e30, tl.float32)
        b_l = tl.zeros([BLOCK_R, BLOCK_S, BLOCK_H], tl.float32)
        b_delta = tl.zeros([BLOCK_R, BLOCK_S, BLOCK_H], tl.float32)
        for j in range(key_lo, key_hi):
            b_mk, b_k, b_v = _load_key(
                k, v, tab_m, o_tk, j, m_s, o_ks, o_vs, stride_km, stride_vm, o_khd, o_vhd, m_khd
            )
            b_s = _scores(b_q, b_k, b_mq, b_mk, lo, window)  # [R, S, H]
            b_dp = tl.sum(b_do * b_v[None, :, :, :], axis=3)  # [R, S, H]
            b_mn = tl.maximum(b_m, b_s)
            b_alpha = tl.exp2(b_m - b_mn)
            b_p = tl.exp2(b_s - b_mn)
            b_l = b_l * b_alpha + b_p
            b_delta = b_delta * b_alpha + b_p * b_dp
            b_m = b_mn
        b_linv = tl.where(b_l > 0, 1.0 / tl.where(b_l > 0, b_l, 1.0), 0.0)
        b_delta = b_delta * b_linv

        # pass 2: every key column (dk, dv of each member are written here, zeros included)
        o_xs = i_b * stride_xb + i_c * stride_xc  # [BLOCK_S]
        o_xhd = (o_hh[:, None] * stride_xh + o_d[None, :] * stride_xd)[None, :, :]
        b_dq = tl.zeros([BLOCK_R, BLOCK_S, BLOCK_H, BLOCK_D], tl.float32)
        for j in range(0, TM):
            b_mk, b_k, b_v = _load_key(
                k, v, tab_m, o_tk, j, m_s, o_ks, o_vs, stride_km, stride_vm, o_khd, o_vhd, m_khd
            )
            b_s = _scores(b_q, b_k, b_mq, b_mk, lo, window)
            b_p = tl.exp2(b_s - b_m) * b_linv  # [R, S, H]
            b_dp = tl.sum(b_do * b_v[None, :, :, :], axis=3)
            b_ds = b_p * (b_dp - b_delta)  # [R, S, H] = d(loss) / d(scale * q.k)
            b_dq += b_ds[:, :, :, None] * b_k[None, :, :, :]
            b_dk = tl.sum(b_ds[:, :, :, None] * b_q, axis=0) * _LN2  # [S, H, D]
            b_dv = tl.sum(b_p[:, :, :, None] * b_do, axis=0)  # [S, H, D]
            o_x = (o_xs + b_mk.to(tl.int64) * stride_xm)[:, None, None] + o_xhd
            m_x = (b_mk >= 0)[:, None, None] & m_khd
            tl.store(dk + o_x, b_dk.to(dk.dtype.element_ty), mask=m_x)
            tl.store(dv + o_x, b_dv.to(dv.dtype.element_ty), mask=m_x)

        b_mq = tl.load(tab_m + o_tr, mask=m_r, other=-1)
        p_dq = dq + (o_xs[None, :] + b_mq.to(tl.int64) * stride_xm)[:, :, None, None] + o_xhd[None, :, :, :]
        b_dq = b_dq * scale
        tl.store(p_dq, b_dq.to(dq.dtype.element_ty), mask=(b_mq >= 0)[:, :, None, None] & m_hd[None, None, :, :])
