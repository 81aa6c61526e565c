#version 450
// group_pool: QA-LoRA input pooling over groups of G consecutive columns. Forward: y[m,l] = inv_g · Σ_{i<G} x[m, l·G+i]
// (sum in order, then one multiply), one invocation per output. With -DBACKWARD: dx[m,j] = inv_g · dy[m, j/G], written,
// or added to dx when ACCUMULATE (spec constant 1). Writes y, or writes/accumulates dx.
#include "common.glsl"

layout(constant_id = 1) const uint ACCUMULATE = 0;

#ifdef BACKWARD
layout(std430, set = 0, binding = 0) readonly buffer Dy { float dy[]; };
layout(std430, set = 0, binding = 1) buffer Dx { float dx[]; };
#else
layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Y { float y[]; };
#endif

layout(push_constant) uniform Push
{
    uint count;       // outputs: M·K/G (forward) or M·K (backward)
    uint groups_x;
    uint group;       // G
    float inv_g;      // 1/G rounded to fp32
    uint in_offset, out_offset;
} pc;

void main()
{
    uint i = global_index_2d(pc.groups_x);
    if (i >= pc.count) return;
#ifdef BACKWARD
    // Rows of dx hold K = L·G columns and rows of dy L, so dy's flat index is i / G.
    float v = pc.inv_g * dy[pc.in_offset + i / pc.group];
    uint o = pc.out_offset + i;
    if (ACCUMULATE != 0) v += dx[o];
    dx[o] = v;
#else
    // Output (m, l) has flat index i = m·L + l; its inputs start at m·K + l·G = i·G.
    uint base = pc.in_offset + i * pc.group;
    float s = 0.0;
    for (uint j = 0; j < pc.group; j++) s += x[base + j];
    y[pc.out_offset + i] = pc.inv_g * s;
#endif
}
