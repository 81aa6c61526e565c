#version 450
// swiglu: forward h = silu(g) ⊙ u with silu(g) = g·σ(g). With -DBACKWARD, from dh: dg = dh·u·σ(g)·(1 + g·(1 − σ(g))),
// du = dh·silu(g). Writes h (may alias g or u), or dg and du (may alias g and u: each element is read before written).
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer G { float gate[]; };
layout(std430, set = 0, binding = 1) readonly buffer U { float up[]; };
#ifdef BACKWARD
layout(std430, set = 0, binding = 2) readonly buffer Dh { float dh[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Dg { float dg[]; };
layout(std430, set = 0, binding = 4) writeonly buffer Du { float du[]; };
#else
layout(std430, set = 0, binding = 2) writeonly buffer H { float h[]; };
#endif

layout(push_constant) uniform Push
{
    uint count;
    uint groups_x;
    uint g_offset, u_offset, h_offset;   // element offsets inside each binding (h_offset: dh in the backward pass)
    uint dg_offset, du_offset;           // backward only
} pc;

void main()
{
    uint i = global_index_2d(pc.groups_x);
    if (i >= pc.count) return;
    float g = gate[pc.g_offset + i], u = up[pc.u_offset + i];
    float sig = 1.0 / (1.0 + exp(-g));
#ifdef BACKWARD
    float d = dh[pc.h_offset + i];
    dg[pc.dg_offset + i] = d * u * sig * (1.0 + g * (1.0 - sig));
    du[pc.du_offset + i] = d * g * sig;
#else
    h[pc.h_offset + i] = g * sig * u;
#endif
}
