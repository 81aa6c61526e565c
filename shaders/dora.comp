#version 450
// dora: the kernels of DoRA's per-output-row weight norm (one mode per define).
//  -DROW_SUMSQ (with a quant format define, or -DDENSE for an fp32 weight): out[row] = Σ_i W[row, i]² of the weight
//     [rows, cols] as the kernels decode it, one workgroup per row; with SQRT (spec constant 1) the root (the row norm).
//     Writes out.
//  -DNORM_SCALE: per row j of a rank-r update, n_j = sqrt(max(w2_j + Σ_k B[j,k]·(2s·Ct[k,j] + s²·BG[j,k]), 0)) — the
//     exact ‖W0_j + s·(B·A)_j‖ from ‖W0_j‖² (w2), Ct = A·W0ᵀ [r, rows] and BG = B·(A·Aᵀ) [rows, r] — then
//     scale_j = m_j / n_j and inv_n_j = 1 / n_j. One invocation per row. Writes scale and inv_n.
//  -DSCALE_COLUMNS: y[t, j] = x[t, j]·v[j] over whole rows of cols (y may be x). Writes y.
#include "common.glsl"

#if defined(ROW_SUMSQ)
#include "reduce.glsl"
layout(constant_id = 1) const uint SQRT = 0;
#ifdef DENSE
layout(std430, set = 0, binding = 0) readonly buffer W { float w[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { float y[]; };
#else
#define QUANT_FIRST_BINDING 0
#include "quant_bindings.glsl"
layout(std430, set = 0, binding = 4) writeonly buffer Out { float y[]; };
#endif

layout(push_constant) uniform Push
{
    uint rows;        // rows in this dispatch
    uint groups_x;
    uint first_row;   // quantized: row index of this dispatch's first row inside the weight
    uint w_offset;    // dense: element offset of the first row inside its binding
    uint out_offset;
    uint q_block;
    uint q_cols;      // in_features
    float q_offset;
} pc;

#ifndef DENSE
#include "quant.glsl"
#endif

void main()
{
    uint row = gl_WorkGroupID.y * pc.groups_x + gl_WorkGroupID.x;
    if (row >= pc.rows) return;   // uniform per workgroup
    float acc = 0.0;
    for (uint c = gl_LocalInvocationID.x; c < pc.q_cols; c += gl_WorkGroupSize.x)
    {
#ifdef DENSE
        float v = w[pc.w_offset + row * pc.q_cols + c];
#else
        float v = q_dequant((pc.first_row + row) * pc.q_cols + c);
#endif
        acc += v * v;
    }
    float s = wg_sum(acc);
    if (gl_LocalInvocationID.x == 0) y[pc.out_offset + row] = SQRT != 0 ? sqrt(s) : s;
}

#elif defined(NORM_SCALE)
layout(std430, set = 0, binding = 0) readonly buffer W2 { float w2[]; };     // [rows]
layout(std430, set = 0, binding = 1) readonly buffer B { float b[]; };       // [rows, r]
layout(std430, set = 0, binding = 2) readonly buffer Ct { float ct[]; };     // [r, rows]
layout(std430, set = 0, binding = 3) readonly buffer BG { float bg[]; };     // [rows, r]
layout(std430, set = 0, binding = 4) readonly buffer M { float m[]; };       // [rows]
layout(std430, set = 0, binding = 5) writeonly buffer Scale { float scale[]; };
layout(std430, set = 0, binding = 6) writeonly buffer InvN { float inv_n[]; };

layout(push_constant) uniform Push
{
    uint rows;
    uint groups_x;
    uint rank;
    float s;
    uint w2_offset, b_offset, ct_offset, bg_offset, m_offset, scale_offset, inv_offset;
} pc;

void main()
{
    uint j = global_index_2d(pc.groups_x);
    if (j >= pc.rows) return;
    float twoS = 2.0 * pc.s, s2 = pc.s * pc.s;
    float acc = 0.0;
    for (uint k = 0; k < pc.rank; k++)
        acc += b[pc.b_offset + j * pc.rank + k] * (twoS * ct[pc.ct_offset + k * pc.rows + j] + s2 * bg[pc.bg_offset + j * pc.rank + k]);
    float n = sqrt(max(w2[pc.w2_offset + j] + acc, 0.0));
    scale[pc.scale_offset + j] = m[pc.m_offset + j] / n;
    inv_n[pc.inv_offset + j] = 1.0 / n;
}

#elif defined(SCALE_COLUMNS)
layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer V { float v[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push
{
    uint count;       // elements in this dispatch (whole rows)
    uint groups_x;
    uint cols;
    uint x_offset, v_offset, y_offset;
} pc;

void main()
{
    uint i = global_index_2d(pc.groups_x);
    if (i >= pc.count) return;
    y[pc.y_offset + i] = x[pc.x_offset + i] * v[pc.v_offset + i % pc.cols];
}
#endif
