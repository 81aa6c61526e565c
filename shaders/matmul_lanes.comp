#version 450
// matmul_lanes: C[M,N] = alpha * A[M,K] · B[N,K]ᵀ + beta * C for CPU Vulkan devices (lavapipe), where shared memory,
// barriers and per-lane (divergent) buffer loads are expensive but subgroup broadcasts are cheap register shuffles.
// One workgroup is one subgroup of SG lanes and owns an (RB·SG) x (CB·SG) tile of C. At each step along K every lane
// loads RB rows of A and CB rows of B (four K values at once with VEC4), then the A values are broadcast lane by lane
// so each lane accumulates RB·SG x CB outputs in registers. Same push block as matmul.comp (TRANS_B layout only).
// Writes C when beta == 0, else accumulates.
#extension GL_EXT_control_flow_attributes : enable
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_ballot : enable

#ifndef SG
#define SG 8u
#endif
#ifndef RB
#define RB 2u
#endif
#ifndef CB
#define CB 2u
#endif
layout(local_size_x = SG) in;

#ifdef VEC4
#define ELEM vec4
#define KSTEP 4u
#else
#define ELEM float
#define KSTEP 1u
#endif

layout(std430, set = 0, binding = 0) readonly buffer BufA { ELEM a[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufB { ELEM b[]; };
layout(std430, set = 0, binding = 2) buffer BufC { float c[]; };

layout(push_constant) uniform Push
{
    uint M, N, K;
    uint lda, ldb, ldc;
    uint a_offset, b_offset, c_offset;
    float alpha, beta;
} pc;

float dot_elem(ELEM x, ELEM y, float acc)
{
#ifdef VEC4
    acc = fma(x.x, y.x, acc);
    acc = fma(x.y, y.y, acc);
    acc = fma(x.z, y.z, acc);
    return fma(x.w, y.w, acc);
#else
    return fma(x, y, acc);
#endif
}

void main()
{
    uint lane = gl_SubgroupInvocationID;
    uint m0 = gl_WorkGroupID.y * (RB * SG), n0 = gl_WorkGroupID.x * (CB * SG);

    // Rows of A and B this lane loads (clamped so every load is in range; clamped rows are never stored).
    uint arow[RB], brow[CB];
    [[unroll]] for (uint r = 0; r < RB; r++) arow[r] = (pc.a_offset + min(m0 + r * SG + lane, pc.M - 1) * pc.lda) / KSTEP;
    [[unroll]] for (uint q = 0; q < CB; q++) brow[q] = (pc.b_offset + min(n0 + q * SG + lane, pc.N - 1) * pc.ldb) / KSTEP;

    float acc[RB * SG][CB];
    [[unroll]] for (uint i = 0; i < RB * SG; i++)
        [[unroll]] for (uint q = 0; q < CB; q++) acc[i][q] = 0.0;

    uint steps = pc.K / KSTEP;
    for (uint k = 0; k < steps; k++)
    {
        ELEM av[RB], bv[CB];
        [[unroll]] for (uint r = 0; r < RB; r++) av[r] = a[arow[r] + k];
        [[unroll]] for (uint q = 0; q < CB; q++) bv[q] = b[brow[q] + k];
        [[unroll]] for (uint r = 0; r < RB; r++)
        {
            [[unroll]] for (uint s = 0; s < SG; s++)
            {
                ELEM x = subgroupBroadcast(av[r], s);
                [[unroll]] for (uint q = 0; q < CB; q++) acc[r * SG + s][q] = dot_elem(x, bv[q], acc[r * SG + s][q]);
            }
        }
    }

    [[unroll]] for (uint i = 0; i < RB * SG; i++)
    {
        uint m = m0 + i;
        [[unroll]] for (uint q = 0; q < CB; q++)
        {
            uint n = n0 + q * SG + lane;
            if (m < pc.M && n < pc.N)
            {
                uint o = pc.c_offset + m * pc.ldc + n;
                float v = pc.alpha * acc[i][q];
                if (pc.beta != 0.0) v += pc.beta * c[o];
                c[o] = v;
            }
        }
    }
}
