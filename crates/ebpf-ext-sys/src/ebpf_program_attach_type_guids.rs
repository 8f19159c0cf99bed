//! `ebpf_program_attach_type_guids.h`: program type and attach type GUIDs.

use crate::ntdef::GUID;

/// `EBPF_PROGRAM_TYPE_UNSPECIFIED` (all zero).
pub const EBPF_PROGRAM_TYPE_UNSPECIFIED: GUID = GUID::NULL;

/// `EBPF_ATTACH_TYPE_UNSPECIFIED` (all zero).
pub const EBPF_ATTACH_TYPE_UNSPECIFIED: GUID = GUID::NULL;

/// Program type xdp (`f1832a85-85d5-45b0-98a0-7069d63013b0`).
pub const EBPF_PROGRAM_TYPE_XDP: GUID = GUID::from_u128(0xf1832a85_85d5_45b0_98a0_7069d63013b0);

/// Program type bind (`608c517c-6c52-4a26-b677-bb1c34425adf`).
pub const EBPF_PROGRAM_TYPE_BIND: GUID = GUID::from_u128(0x608c517c_6c52_4a26_b677_bb1c34425adf);

/// Program type cgroup sock addr (`92ec8e39-aeec-11ec-9a30-18602489beee`).
pub const EBPF_PROGRAM_TYPE_CGROUP_SOCK_ADDR: GUID =
    GUID::from_u128(0x92ec8e39_aeec_11ec_9a30_18602489beee);

/// Program type sock ops (`43fb224d-68f8-46d6-aa3f-c856518cbb32`).
pub const EBPF_PROGRAM_TYPE_SOCK_OPS: GUID =
    GUID::from_u128(0x43fb224d_68f8_46d6_aa3f_c856518cbb32);

/// Program type netevent (`fc4adc85-49c3-4f0a-8393-facce89cde91`).
pub const EBPF_PROGRAM_TYPE_NETEVENT: GUID =
    GUID::from_u128(0xfc4adc85_49c3_4f0a_8393_facce89cde91);

/// Program type process (`22ea7b37-1043-4d0d-b60d-cafa1c7b638e`).
pub const EBPF_PROGRAM_TYPE_PROCESS: GUID = GUID::from_u128(0x22ea7b37_1043_4d0d_b60d_cafa1c7b638e);

/// Program type sample (`f788ef4a-207d-4dc3-85cf-0f2ea107213c`).
pub const EBPF_PROGRAM_TYPE_SAMPLE: GUID = GUID::from_u128(0xf788ef4a_207d_4dc3_85cf_0f2ea107213c);

/// Program type xdp test (`ce8ccef8-4241-4975-984d-bb3921dfa73c`).
pub const EBPF_PROGRAM_TYPE_XDP_TEST: GUID =
    GUID::from_u128(0xce8ccef8_4241_4975_984d_bb3921dfa73c);

/// Attach type xdp (`85e0d8ef-579e-4931-b072-8ee226bb2e9d`).
pub const EBPF_ATTACH_TYPE_XDP: GUID = GUID::from_u128(0x85e0d8ef_579e_4931_b072_8ee226bb2e9d);

/// Attach type bind (`b9707e04-8127-4c72-833e-05b1fb439496`).
pub const EBPF_ATTACH_TYPE_BIND: GUID = GUID::from_u128(0xb9707e04_8127_4c72_833e_05b1fb439496);

/// Attach type cgroup inet4 connect (`a82e37b1-aee7-11ec-9a30-18602489beee`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET4_CONNECT: GUID =
    GUID::from_u128(0xa82e37b1_aee7_11ec_9a30_18602489beee);

/// Attach type cgroup inet6 connect (`a82e37b2-aee7-11ec-9a30-18602489beee`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET6_CONNECT: GUID =
    GUID::from_u128(0xa82e37b2_aee7_11ec_9a30_18602489beee);

/// Attach type cgroup inet4 recv accept (`a82e37b3-aee7-11ec-9a30-18602489beee`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET4_RECV_ACCEPT: GUID =
    GUID::from_u128(0xa82e37b3_aee7_11ec_9a30_18602489beee);

/// Attach type cgroup inet6 recv accept (`a82e37b4-aee7-11ec-9a30-18602489beee`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET6_RECV_ACCEPT: GUID =
    GUID::from_u128(0xa82e37b4_aee7_11ec_9a30_18602489beee);

/// Attach type cgroup sock ops (`837d02cd-3251-4632-8d94-60d3b45769f2`).
pub const EBPF_ATTACH_TYPE_CGROUP_SOCK_OPS: GUID =
    GUID::from_u128(0x837d02cd_3251_4632_8d94_60d3b45769f2);

/// Attach type sample (`f788ef4b-207d-4dc3-85cf-0f2ea107213c`).
pub const EBPF_ATTACH_TYPE_SAMPLE: GUID = GUID::from_u128(0xf788ef4b_207d_4dc3_85cf_0f2ea107213c);

/// Attach type netevent (`68011b08-ab6b-4b46-85e4-67bae1afe741`).
pub const EBPF_ATTACH_TYPE_NETEVENT: GUID = GUID::from_u128(0x68011b08_ab6b_4b46_85e4_67bae1afe741);

/// Attach type process (`66e20687-9805-4458-a0db-38e220d31685`).
pub const EBPF_ATTACH_TYPE_PROCESS: GUID = GUID::from_u128(0x66e20687_9805_4458_a0db_38e220d31685);

/// Attach type cgroup inet4 connect authorization (`6076c13a-f04f-4ff8-8380-908553f22276`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET4_CONNECT_AUTHORIZATION: GUID =
    GUID::from_u128(0x6076c13a_f04f_4ff8_8380_908553f22276);

/// Attach type cgroup inet6 connect authorization (`54b0b6ed-432a-4674-8b27-8d9f5b40c675`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET6_CONNECT_AUTHORIZATION: GUID =
    GUID::from_u128(0x54b0b6ed_432a_4674_8b27_8d9f5b40c675);

/// Attach type cgroup inet4 bind (`0d7ce21a-7773-405c-93b6-d5bfb92e74bc`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET4_BIND: GUID =
    GUID::from_u128(0x0d7ce21a_7773_405c_93b6_d5bfb92e74bc);

/// Attach type cgroup inet6 bind (`81de64c0-2973-468d-8382-6769f033d759`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET6_BIND: GUID =
    GUID::from_u128(0x81de64c0_2973_468d_8382_6769f033d759);

/// Attach type cgroup inet4 listen (`e1b0cb3d-d70c-4ee2-b23a-0742bedb06d6`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET4_LISTEN: GUID =
    GUID::from_u128(0xe1b0cb3d_d70c_4ee2_b23a_0742bedb06d6);

/// Attach type cgroup inet6 listen (`4e72f92e-5ed0-4fe5-b851-b124fe14074d`).
pub const EBPF_ATTACH_TYPE_CGROUP_INET6_LISTEN: GUID =
    GUID::from_u128(0x4e72f92e_5ed0_4fe5_b851_b124fe14074d);

/// Attach type xdp test (`0dccc15d-a5f9-4dc1-ac79-fa25eef215c3`).
pub const EBPF_ATTACH_TYPE_XDP_TEST: GUID = GUID::from_u128(0x0dccc15d_a5f9_4dc1_ac79_fa25eef215c3);
