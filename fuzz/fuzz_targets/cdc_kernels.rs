#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| volley_proto_fuzz::cdc_kernels(data));
