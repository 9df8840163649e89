//! OpenAPI schemas of the values whose types live in other crates or are plain strings here
//! (image states, error codes, event kinds, version names, project ids, accepted types), built
//! from the Rust enums themselves so the document can't drift from what the api sends. A leaf:
//! the wire types (`view`) and the routes name these in `schema_with`, and `openapi` assembles
//! the document from them. Also `{id}` of the image routes, shared by two route files.

use gallery_schema::{ErrorCode, EventKind, ImageState, ProjectId, VersionName};
use utoipa::openapi::schema::{
    AdditionalProperties, Object, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::{Ref, RefOr};

/// `{id}` of the image routes (documentation: the handlers take it as text and answer 404 for
/// anything that is not an image's id).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct ImagePath {
    /// The image id (a UUID, from `POST /images/`)
    #[param(format = Uuid)]
    id: String,
}

fn string_enum<I: IntoIterator<Item = &'static str>>(values: I, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .description(Some(description))
        .build()
}

pub fn image_state() -> Object {
    string_enum(
        ImageState::ALL.map(ImageState::as_str),
        "init: link given; uploaded: file stored; processing; done: every version rendered; \
         error: see `error`",
    )
}

pub fn error_code() -> Object {
    string_enum(
        ErrorCode::ALL.map(ErrorCode::as_str),
        "Stable and machine-readable",
    )
}

pub fn event_kind() -> Object {
    string_enum(EventKind::ALL.map(EventKind::as_str), "The event's kind")
}

pub fn version_name() -> Object {
    string_enum(VersionName::CASCADE.map(VersionName::as_str), "A version")
}

pub fn post_only() -> Object {
    string_enum(["POST"], "The HTTP method of the upload")
}

pub fn accepted_content_type() -> Object {
    string_enum(
        crate::content_type::ACCEPTED,
        "An accepted image type; derived from the file name when absent",
    )
}

fn project_id_string() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!("^[A-Za-z0-9_-]{{1,{}}}$", ProjectId::MAX_LEN)))
        .description(Some("A project id: letters, digits, `_` and `-`"))
        .build()
}

pub fn project_id() -> Object {
    project_id_string()
}

/// `POST /images/` also takes a project id as a JSON number (the original task's examples).
pub fn project_id_or_number() -> Schema {
    OneOfBuilder::new()
        .item(project_id_string())
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .description(Some("A numeric project id")),
        )
        .build()
        .into()
}

pub fn version_meta_map() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(version_name()))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::Ref(
            Ref::from_schema_name("VersionMeta"),
        ))))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_list_every_value() {
        let doc = serde_json::to_value(image_state()).unwrap();
        assert_eq!(doc["enum"].as_array().unwrap().len(), ImageState::ALL.len());
        let doc = serde_json::to_value(error_code()).unwrap();
        assert!(
            doc["enum"]
                .as_array()
                .unwrap()
                .contains(&"corrupt_image".into())
        );
    }
}
