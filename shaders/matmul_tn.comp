#version 450
// matmul_tn: C[R,N] = alpha * P[K,R]ᵀ · Q[K,N] + beta * C, fp32 (the weight-gradient product; K is the token count).
// C[r,n] lives at c_offset + r·ldc_r + n·ldc_c, so callers may store the transpose. Each output is one invocation's
// fma chain over k in order (deterministic, no atomics). For CPU devices (lavapipe): one 8-lane subgroup per 8 x 64
// tile, each lane owning 8 consecutive columns, P values broadcast across lanes. GPUs run the same product on
// matmul.comp's shared tiles (variant matmul_tn, -DTRANS_A). Writes C when beta == 0, else accumulates.
#extension GL_EXT_control_flow_attributes : enable
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_ballot : enable

layout(std430, set = 0, binding = 0) readonly buffer BufP { float p[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufQ { float q[]; };
layout(std430, set = 0, binding = 2) buffer BufC { float c[]; };

layout(push_constant) uniform Push
{
    uint R, N, K;
    uint ldp, ldq;           // row strides of P and Q
    uint ldc_r, ldc_c;       // C strides of the row and column index
    uint p_offset, q_offset, c_offset;
    float alpha, beta;
} pc;

void store(uint r, uint n, float acc)
{
    uint o = pc.c_offset + r * pc.ldc_r + n * pc.ldc_c;
    float v = pc.alpha * acc;
    if (pc.beta != 0.0) v += pc.beta * c[o];
    c[o] = v;
}

#define SG 8u
layout(local_size_x = 8) in;

void main()
{
    uint lane = gl_SubgroupInvocationID;
    uint r0 = gl_WorkGroupID.y * SG;
    uint col0 = (gl_WorkGroupID.x * SG + lane) * 8u;           // this lane's first column
    uint prow = min(r0 + lane, pc.R - 1);                        // the row of C whose P value this lane loads
    uint qcol[8];
    [[unroll]] for (uint j = 0; j < 8u; j++) qcol[j] = min(col0 + j, pc.N - 1);

    float acc[SG][8];
    [[unroll]] for (uint i = 0; i < SG; i++)
        [[unroll]] for (uint j = 0; j < 8u; j++) acc[i][j] = 0.0;

    for (uint k = 0; k < pc.K; k++)
    {
        uint qrow = pc.q_offset + k * pc.ldq;
        float bv[8];
        [[unroll]] for (uint j = 0; j < 8u; j++) bv[j] = q[qrow + qcol[j]];
        float av = p[pc.p_offset + k * pc.ldp + prow];             // consecutive lanes, consecutive addresses
        [[unroll]] for (uint s = 0; s < SG; s++)
        {
            float x = subgroupBroadcast(av, s);
            [[unroll]] for (uint j = 0; j < 8u; j++) acc[s][j] = fma(x, bv[j], acc[s][j]);
        }
    }

    [[unroll]] for (uint i = 0; i < SG; i++)
    {
        uint r = r0 + i;
        if (r >= pc.R) break;
        [[unroll]] for (uint j = 0; j < 8u; j++)
            if (col0 + j < pc.N) store(r, col0 + j, acc[i][j]);
    }
}
