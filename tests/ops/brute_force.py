"""Deliberately dumb re-statements of the ops: Python loops over every query, autograd-friendly."""
import torch


def temporal_brute(q, k, v, scale, window=None, causal=False):
    B, F, N, H, D = q.shape
    rows = []
    for b in range(B):
        for f in range(F):
            for n in range(N):
                for h in range(H):
                    keys = [g for g in range(F) if (window is None or abs(f - g) <= window) and (not causal or g <= f)]
                    s = torch.stack([(q[b, f, n, h] * k[b, g, n, h]).sum() * scale for g in keys])
                    p = torch.softmax(s, 0)
                    rows.append(sum(p[i] * v[b, g, n, h] for i, g in enumerate(keys)))
    return torch.stack(rows).view(B, F, N, H, D)


def grouped_brute(q, k, v, groups, scale):
    B, F, N, H, D = q.shape
    group_of = {i: g for g in groups for i in g}
    out = [None] * N
    for n in range(N):
        members = group_of[n]
        per = []
        for b in range(B):
            for f in range(F):
                for h in range(H):
                    s = torch.stack([(q[b, f, n, h] * k[b, f, m, h]).sum() * scale for m in members])
                    p = torch.softmax(s, 0)
                    per.append(sum(p[i] * v[b, f, m, h] for i, m in enumerate(members)))
        out[n] = torch.stack(per).view(B, F, H, D)
    return torch.stack(out, 2)
