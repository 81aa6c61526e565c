#version 450
// cross_entropy: loss[r] = logsumexp(z[r, :]) − z[r, target[r]], 0 when target[r] < 0 (masked), NaN when target[r] ≥ cols;
// one workgroup per row, max-subtracted. Writes loss; with write_grad also overwrites z[r, :] in place with
// (softmax(z[r, :]) − onehot(target[r])) · scale (all zeros for masked rows).
#include "common.glsl"
#include "reduce.glsl"

layout(std430, set = 0, binding = 0) buffer Z { float z[]; };
layout(std430, set = 0, binding = 1) readonly buffer T { int target[]; };
layout(std430, set = 0, binding = 2) writeonly buffer L { float loss[]; };

layout(push_constant) uniform Push
{
    uint rows;
    uint cols;
    uint groups_x;
    float scale;
    uint write_grad;
    uint z_offset, t_offset, loss_offset;   // element offsets inside each binding
} pc;

void main()
{
    uint row = gl_WorkGroupID.y * pc.groups_x + gl_WorkGroupID.x;
    if (row >= pc.rows) return;   // uniform per workgroup
    uint zb = pc.z_offset + row * pc.cols;
    int tgt = target[pc.t_offset + row];
    if (tgt < 0)
    {
        if (gl_LocalInvocationID.x == 0) loss[pc.loss_offset + row] = 0.0;
        if (pc.write_grad != 0)
            for (uint c = gl_LocalInvocationID.x; c < pc.cols; c += gl_WorkGroupSize.x) z[zb + c] = 0.0;
        return;
    }
    bool valid = uint(tgt) < pc.cols;
    float zt = valid ? z[zb + uint(tgt)] : 0.0;   // read before any lane overwrites the row (wg_max has barriers)
    float m = uintBitsToFloat(0xff800000u);
    for (uint c = gl_LocalInvocationID.x; c < pc.cols; c += gl_WorkGroupSize.x) m = max(m, z[zb + c]);
    m = wg_max(m);
    float s = 0.0;
    for (uint c = gl_LocalInvocationID.x; c < pc.cols; c += gl_WorkGroupSize.x) s += exp(z[zb + c] - m);
    s = wg_sum(s);
    if (gl_LocalInvocationID.x == 0) loss[pc.loss_offset + row] = valid ? m + log(s) - zt : uintBitsToFloat(0x7fc00000u);
    if (pc.write_grad != 0)
    {
        float k = pc.scale / s;
        for (uint c = gl_LocalInvocationID.x; c < pc.cols; c += gl_WorkGroupSize.x)
        {
            float p = exp(z[zb + c] - m) * k;
            z[zb + c] = int(c) == tgt ? p - pc.scale : p;
        }
    }
}
