#version 450
// bias: y[m,n] += bias[n] in place over whole rows of N (one invocation per element). With -DGRAD: db[n] = Σ_m dy[m,n]
// over this dispatch's rows in row order, one invocation per column; written, or added to db when ACCUMULATE
// (spec constant 1). Accumulates y, or writes/accumulates db.
#include "common.glsl"

layout(constant_id = 1) const uint ACCUMULATE = 0;

#ifdef GRAD
layout(std430, set = 0, binding = 0) readonly buffer Dy { float dy[]; };
layout(std430, set = 0, binding = 1) buffer Db { float db[]; };
#else
layout(std430, set = 0, binding = 0) buffer Y { float y[]; };
layout(std430, set = 0, binding = 1) readonly buffer B { float bias[]; };
#endif

layout(push_constant) uniform Push
{
    uint count;       // elements of y (Add) or columns N (Grad)
    uint groups_x;
    uint rows;        // Grad: rows in this dispatch
    uint cols;        // N
    uint y_offset, b_offset;   // y or dy, and bias or db
} pc;

void main()
{
    uint i = global_index_2d(pc.groups_x);
    if (i >= pc.count) return;
#ifdef GRAD
    float s = 0.0;
    for (uint r = 0; r < pc.rows; r++) s += dy[pc.y_offset + r * pc.cols + i];
    uint o = pc.b_offset + i;
    if (ACCUMULATE != 0) s = db[o] + s;
    db[o] = s;
#else
    y[pc.y_offset + i] += bias[pc.b_offset + i % pc.cols];
#endif
}
