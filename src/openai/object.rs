//! `Obj<T>`: a struct read only from a JSON object. serde's derived struct visitor also takes an
//! array (the fields in declaration order), which would accept `"stream_options": [true]` or a
//! message sent as `["user", "hi"]` without a word; wrapped in `Obj`, an array (or any non-object)
//! is a 422 `validation_error` whose message and `param` name the field (`Named::NAME`).

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The request path a wrapped struct stands at, as errors name it.
pub trait Named {
    const NAME: &'static str;
}

/// Names the object-typed fields of a chat request (`named!(Type => "path", …)`).
macro_rules! named {
    ($($t:ty => $name:literal),* $(,)?) => {
        $(impl $crate::openai::object::Named for $t {
            const NAME: &'static str = $name;
        })*
    };
}
pub(crate) use named;

#[derive(Debug)]
pub struct Obj<T>(pub T);

impl<T> Deref for Obj<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The text an `Obj` refusal carries (`param_of` finds the field again).
const EXPECTING: (&str, &str) = ("`", "` to be a JSON object");

impl<'de, T: Deserialize<'de> + Named> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Named> Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}{}", EXPECTING.0, T::NAME, EXPECTING.1)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        // `deserialize_any`, not `deserialize_map`: simd-json answers the latter with a bare
        // `ExpectedMap`, while `any` reaches this visitor, whose refusal names the field.
        d.deserialize_any(V(PhantomData)).map(Obj)
    }
}

/// The field an `Obj` refusal names in a deserializer's error text, among `names`.
pub fn param_of(message: &str, names: &[&'static str]) -> Option<&'static str> {
    names
        .iter()
        .copied()
        .find(|n| message.contains(&format!("{}{}{}", EXPECTING.0, n, EXPECTING.1)))
}

/// `#[serde(default, deserialize_with = "object::opt")]` on an `Option<T>` field.
pub fn opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Named,
{
    Ok(Option::<Obj<T>>::deserialize(d)?.map(|o| o.0))
}

/// `#[serde(default, deserialize_with = "object::opt_vec")]` on an `Option<Vec<T>>` field.
pub fn opt_vec<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Named,
{
    Ok(Option::<Vec<Obj<T>>>::deserialize(d)?.map(|v| v.into_iter().map(|o| o.0).collect()))
}

/// `#[serde(deserialize_with = "object::vec")]` on a `Vec<T>` field.
pub fn vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Named,
{
    Ok(Vec::<Obj<T>>::deserialize(d)?
        .into_iter()
        .map(|o| o.0)
        .collect())
}

/// `#[serde(deserialize_with = "object::one")]` on a `T` field.
pub fn one<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Named,
{
    Ok(Obj::<T>::deserialize(d)?.0)
}

/// Every name a chat request's `Obj` fields carry, for `param_of`.
pub const NAMES: &[&str] = &[
    "messages[]",
    "stream_options",
    "response_format",
    "response_format.json_schema",
    "tools[]",
    "tools[].function",
    "tool_choice",
    "tool_choice.function",
    "messages[].tool_calls[]",
    "messages[].tool_calls[].function",
    "messages[].tool_calls[].extra_content",
    "messages[].tool_calls[].extra_content.google",
    "messages[].content[]",
    "messages[].content[].image_url",
    "messages[].content[].input_audio",
    "messages[].content[].file",
];
