//! `ebpf_program_attach_type_guids.h`: program type and attach type GUIDs.

use crate::ntdef::GUID;

/// `EBPF_PROGRAM_TYPE_UNSPECIFIED` (all zero).
pub const EBPF_PROGRAM_TYPE_UNSPECIFIED: GUID = GUID::NULL;

/// `EBPF_ATTACH_TYPE_UNSPECIFIED` (all zero).
pub const EBPF_ATTACH_TYPE_UNSPECIFIED: GUID = GUID::NULL;

/// Program type xdp (`f1832a85-85d5-45b0-98a0-7069d63013b0`).
pub const EBPF_PROGRAM_TYPE_XDP: GUID = GUID::from_u128(0xf1832a8585d545b098a07069d63013b0);

/// Program type bind (`608c517c-6c52-4a26-b677-bb1c34425adf`).
pub const EBPF_PROGRAM_TYPE_BIND: GUID = GUID::from_u128(0x608c517c6c524a26b677bb1c34425adf);

/// Program type cgroup sock addr (`92ec8e39-aeec-11ec-9a30-18602489beee`).
pub const EBPF_PROGRAM_TYPE_CGROUP_SOCK_ADDR: GUID = GUID::from_u128(0x92ec8e39aeec11ec9a3018602489beee);

/// Program type sock ops (`43fb224d-68f8-46d6-aa3f-c856518cbb32`).
pub const EBPF_PROGRAM_TYPE_SOCK_OPS: GUID = GUID::from_u128(0x43fb224d68f846d6aa3fc856518cbb32);

/// Program type netevent (`fc4adc85-49c3-4f0a-8393-facce89cde91`).
pub const EBPF_PROGRAM_TYPE_NETEVENT: GUID = GUID::from_u128(0xfc4adc8549c34f0a8393facce89cde91);

/// Program type process (`22ea7b37-1043-4d0d-b60d-cafa1c7b638e`).
pub const EBPF_PROGRAM_TYPE_PROCESS: GUID = GUID::from_u128(0x22ea7b3710434d0db60dcafa1c7b638e);

/// Program type sample (`f788ef4a-207d-4dc3-85cf-0f2ea107213c`).
pub const EBPF_PROGRAM_TYPE_SAMPLE: GUID = GUID::from_u128(0xf788ef4a207d4dc385cf0f2ea107213c);

/// Program type xdp test (`ce8ccef8-4241-4975-984d-bb3921dfa73c`).
pub const EBPF_PROGRAM_TYPE_XDP_TEST: GUID = GUID::from_u128(0xce8ccef842414975984dbb3921dfa73c);

/// Attach type xdp (`85e0d8ef-579e-4931-b072-8ee226bb2e9d`).
pub const EBPF_ATTACH_TYPE_XDP: GUID = GUID::from_u128(0x85e0d8ef579e4931b0728ee226bb2e9d);

/// Attach type bind (`b9707e04-8127-4c72-833e-05b1fb439496`).
pub const EBPF_ATTACH_TYPE_BIND: GUID = GUID::from_u128(0xb9707e0481274c72833e05b1fb439496);

/// Attach type cgroup inet4 connect (`a82e37b1-aee7-11ec-9a30-18602489beee`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET4_CONNECT: GUID = GUID::from_u128(0xa82e37b1aee711ec9a3018602489beee);

/// Attach type cgroup inet6 connect (`a82e37b2-aee7-11ec-9a30-18602489beee`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET6_CONNECT: GUID = GUID::from_u128(0xa82e37b2aee711ec9a3018602489beee);

/// Attach type cgroup inet4 recv accept (`a82e37b3-aee7-11ec-9a30-18602489beee`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET4_RECV_ACCEPT: GUID = GUID::from_u128(0xa82e37b3aee711ec9a3018602489beee);

/// Attach type cgroup inet6 recv accept (`a82e37b4-aee7-11ec-9a30-18602489beee`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET6_RECV_ACCEPT: GUID = GUID::from_u128(0xa82e37b4aee711ec9a3018602489beee);

/// Attach type cgroup sock ops (`837d02cd-3251-4632-8d94-60d3b45769f2`).
pub const EBPF_ATTACH_TYPE_CGROUP_SOCK_OPS: GUID = GUID::from_u128(0x837d02cd325146328d9460d3b45769f2);

/// Attach type sample (`f788ef4b-207d-4dc3-85cf-0f2ea107213c`).
pub const EBPF_ATTACH_TYPE_SAMPLE: GUID = GUID::from_u128(0xf788ef4b207d4dc385cf0f2ea107213c);

/// Attach type netevent (`68011b08-ab6b-4b46-85e4-67bae1afe741`).
pub const EBPF_ATTACH_TYPE_NETEVENT: GUID = GUID::from_u128(0x68011b08ab6b4b4685e467bae1afe741);

/// Attach type process (`66e20687-9805-4458-a0db-38e220d31685`).
pub const EBPF_ATTACH_TYPE_PROCESS: GUID = GUID::from_u128(0x66e2068798054458a0db38e220d31685);

/// Attach type cgroup inet4 connect authorization (`6076c13a-f04f-4ff8-8380-908553f22276`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET4_CONNECT_AUTHORIZATION: GUID = GUID::from_u128(0x6076c13af04f4ff88380908553f22276);

/// Attach type cgroup inet6 connect authorization (`54b0b6ed-432a-4674-8b27-8d9f5b40c675`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET6_CONNECT_AUTHORIZATION: GUID = GUID::from_u128(0x54b0b6ed432a46748b278d9f5b40c675);

/// Attach type cgroup inet4 bind (`0d7ce21a-7773-405c-93b6-d5bfb92e74bc`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET4_BIND: GUID = GUID::from_u128(0x0d7ce21a7773405c93b6d5bfb92e74bc);

/// Attach type cgroup inet6 bind (`81de64c0-2973-468d-8382-6769f033d759`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET6_BIND: GUID = GUID::from_u128(0x81de64c02973468d83826769f033d759);

/// Attach type cgroup inet4 listen (`e1b0cb3d-d70c-4ee2-b23a-0742bedb06d6`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET4_LISTEN: GUID = GUID::from_u128(0xe1b0cb3dd70c4ee2b23a0742bedb06d6);

/// Attach type cgroup inet6 listen (`4e72f92e-5ed0-4fe5-b851-b124fe14074d`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET6_LISTEN: GUID = GUID::from_u128(0x4e72f92e5ed04fe5b851b124fe14074d);

/// Attach type xdp test (`0dccc15d-a5f9-4dc1-ac79-fa25eef215c3`).
pub const EBPF_ATTACH_TYPE_XDP_TEST: GUID = GUID::from_u128(0x0dccc15da5f94dc1ac79fa25eef215c3);
