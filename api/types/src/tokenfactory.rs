//! Wire types of the Token Factory route family (models, model deployments, and the
//! OpenAI-compatible request and response shapes). None yet.
