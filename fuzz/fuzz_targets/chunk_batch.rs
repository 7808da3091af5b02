#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| volley_proto_fuzz::chunk_batch(data));
