//! Fuzz target: OpenAI chat request parsing and validation (tools and tool-call history included)
//! never panic, what validates has a finite worst-case price, and its Gemini body serializes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vectorway::api::types::parse_chat;
use vectorway::billing::pricing::ModelPrice;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = parse_chat(data) {
        let m = ModelPrice::new("m".into(), "gemini-2.5-flash".into(), vec![], 300_000, 2_500_000, None, 1_200_000, 1, 65_536);
        let worst = req.worst_case(&m, 1024);
        assert!(worst >= m.cost(req.prompt_token_bound(), 0));
        let call = req.to_call(&m, 1024);
        let body = vectorway::upstream::gemini::translate::encode_request(&call);
        assert!(!body.is_empty(), "the Gemini body serialized");
    }
});
