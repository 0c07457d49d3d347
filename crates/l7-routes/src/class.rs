//! Which Ingresses are ours: class selection.

use crate::{CONTROLLER, DEFAULT_CLASS_ANNOTATION, LEGACY_CLASS_ANNOTATION};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use std::collections::HashSet;

/// Whether `class` is annotated as the cluster's default IngressClass.
pub fn is_default_class(class: &IngressClass) -> bool {
    let annotations = class.metadata.annotations.as_ref();
    annotations
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .is_some_and(|value| value == "true")
}

/// The IngressClasses whose `spec.controller` is [`CONTROLLER`].
pub struct Classes<'a> {
    names: HashSet<&'a str>,
    has_default: bool,
}

impl<'a> Classes<'a> {
    /// The classes of `classes` that flatnet serves.
    pub fn new(classes: &'a [IngressClass]) -> Self {
        let ours = classes.iter().filter(|class| {
            class
                .spec
                .as_ref()
                .and_then(|spec| spec.controller.as_deref())
                == Some(CONTROLLER)
        });
        let mut names = HashSet::new();
        let mut has_default = false;
        for class in ours {
            names.extend(class.metadata.name.as_deref());
            has_default |= is_default_class(class);
        }
        Classes { names, has_default }
    }

    /// Whether flatnet serves `ingress`: its `spec.ingressClassName`, else its legacy
    /// annotation, names one of our classes; with neither, one of our classes is the default.
    pub fn serves(&self, ingress: &Ingress) -> bool {
        let class_name = ingress
            .spec
            .as_ref()
            .and_then(|spec| spec.ingress_class_name.as_deref());
        let legacy = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
            .map(String::as_str);
        match class_name.or(legacy) {
            Some(name) => self.names.contains(name),
            None => self.has_default,
        }
    }
}
