//! Fuzz target: the `response_format` schema converter (`openai::schema::response_schema`) never
//! panics or overflows the stack; what it returns passes the structural check again and is a
//! fixed point (converting it again changes nothing), strict or not; strict accepts no more
//! than non-strict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vectorway::openai::schema::{check, response_schema};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let loose = response_schema(&v, "s", false);
    for (strict, out) in [(false, loose.as_ref().ok().cloned()), (true, response_schema(&v, "s", true).ok())] {
        let Some(out) = out else { continue };
        assert!(out.is_object(), "the root stays a schema object");
        assert!(check(&out, "s").is_ok(), "converted output is a valid schema: {out}");
        let again = response_schema(&out, "s", strict).expect("the output converts again");
        assert_eq!(again, out, "conversion is a fixed point");
        assert!(loose.is_ok(), "strict accepted what non-strict refused: {v}");
    }
});
