//! Every way an AWS call fails, reduced to one [`Reason`] and a message a person can act on.
//!
//! [`classify`] works on plain data ([`Failure`]), which `query` produces from what the
//! wire showed, so every rule is tested without a network.
//!
//! Choices worth knowing:
//! * throttling codes (and HTTP 429) are `throttled`, whatever the status, because EC2
//!   sends `RequestLimitExceeded` with 503 and the caller must back off rather than retry;
//! * any other 5xx, with or without an AWS code, is `bad_response`: the endpoint answered,
//!   so it is not `unreachable`, but the answer is unusable. `status` is in `details`;
//! * a timeout of the operation, an attempt or the connection is `timeout`;
//!   connect/reset/DNS/TLS failures without any response are `unreachable`;
//! * a request that cannot be built for lack of credentials is `unauthorized`.

use crate::{Error, Reason};

/// The AWS operations aws_cluster calls, with the IAM action each one needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    DescribeInstances,
    DescribeAutoScalingGroups,
    ListTasks,
    DescribeTasks,
    DescribeContainerInstances,
    UpdateItem,
    Query,
    DeleteItem,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::DescribeInstances => "DescribeInstances",
            Operation::DescribeAutoScalingGroups => "DescribeAutoScalingGroups",
            Operation::ListTasks => "ListTasks",
            Operation::DescribeTasks => "DescribeTasks",
            Operation::DescribeContainerInstances => "DescribeContainerInstances",
            Operation::UpdateItem => "UpdateItem",
            Operation::Query => "Query",
            Operation::DeleteItem => "DeleteItem",
        }
    }

    /// The IAM action a policy must allow for this operation.
    pub fn action(self) -> &'static str {
        match self {
            Operation::DescribeInstances => "ec2:DescribeInstances",
            Operation::DescribeAutoScalingGroups => "autoscaling:DescribeAutoScalingGroups",
            Operation::ListTasks => "ecs:ListTasks",
            Operation::DescribeTasks => "ecs:DescribeTasks",
            Operation::DescribeContainerInstances => "ecs:DescribeContainerInstances",
            Operation::UpdateItem => "dynamodb:UpdateItem",
            Operation::Query => "dynamodb:Query",
            Operation::DeleteItem => "dynamodb:DeleteItem",
        }
    }
}

/// What went wrong, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The service answered with an error response.
    Service {
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },
    /// The operation or attempt timeout fired.
    Timeout,
    /// No response arrived: refused, reset, DNS, TLS, or the connect/read timeout.
    Dispatch { timed_out: bool, cause: String },
    /// A response arrived but could not be read or parsed (cut off, not XML ...).
    Response { status: Option<u16>, cause: String },
    /// The request could not be built, most often for lack of credentials.
    Construction { cause: String },
}

const THROTTLING: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequests",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "PriorRequestNotComplete",
    "SlowDown",
    "EC2ThrottledException",
    "BandwidthLimitExceeded",
];

const UNAUTHORIZED: &[&str] = &[
    "AuthFailure",
    "UnauthorizedOperation",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "InvalidAccessKeyId",
    "MissingAuthenticationToken",
    "UnrecognizedClientException",
    "IncompleteSignature",
    "OptInRequired",
    "Blocked",
];

const INVALID: &[&str] = &[
    "InvalidParameter",
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "InvalidFilter",
    "MissingParameter",
    "UnknownParameter",
    "ValidationError",
    "InvalidAction",
    "InvalidNextToken",
    "InvalidParameterException",
    "ClientException",
];

/// Whether `code` is an AWS throttling error code.
pub fn is_throttling(code: &str) -> bool {
    THROTTLING.contains(&code)
}

/// Whether `code` says the credentials are missing, wrong, expired or not allowed.
pub fn is_unauthorized(code: &str) -> bool {
    UNAUTHORIZED.contains(&code) || is_permission(code)
}

/// Codes that mean "these credentials are valid but lack a permission", as opposed to
/// "these credentials were rejected": the fix differs (IAM policy vs keys/role).
fn is_permission(code: &str) -> bool {
    code == "UnauthorizedOperation" || code.starts_with("AccessDenied")
}

/// Turns a failure of `op` against `endpoint` into the error the caller sees.
/// `timeout_ms` is the configured `operation_timeout`, quoted when it fired.
pub fn classify(op: Operation, endpoint: &str, timeout_ms: u64, failure: Failure) -> Error {
    let name = op.name();
    let err = match failure {
        Failure::Service {
            status,
            code,
            message,
        } => return service(op, endpoint, status, code, message),
        Failure::Timeout => Error::new(
            Reason::Timeout,
            format!("{name} got no complete answer from {endpoint} within {timeout_ms} ms (operation_timeout)"),
        ),
        Failure::Dispatch {
            timed_out: true,
            cause,
        } => Error::new(
            Reason::Timeout,
            format!("{name} failed: no answer from {endpoint} in time ({cause})"),
        ),
        Failure::Dispatch {
            timed_out: false,
            cause,
        } if cause.to_ascii_lowercase().contains("credential") => no_credentials(name, &cause),
        Failure::Dispatch {
            timed_out: false,
            cause,
        } => Error::new(
            Reason::Unreachable,
            format!("{name} failed: cannot reach {endpoint} ({cause})"),
        ),
        Failure::Response { status, cause } => {
            let err = Error::new(
                Reason::BadResponse,
                format!("{name} failed: the response from {endpoint} could not be read ({cause})"),
            );
            match status {
                Some(s) => err.with_number("status", i64::from(s)),
                None => err,
            }
        }
        Failure::Construction { cause } if cause.to_ascii_lowercase().contains("credential") => {
            no_credentials(name, &cause)
        }
        Failure::Construction { cause } => Error::new(
            Reason::Internal,
            format!("{name} failed: the request could not be built ({cause})"),
        ),
    };
    with_context(err, op, endpoint)
}

fn service(
    op: Operation,
    endpoint: &str,
    status: u16,
    code: Option<String>,
    message: Option<String>,
) -> Error {
    let name = op.name();
    let text = match (&code, &message) {
        (Some(c), Some(m)) if !m.is_empty() => format!("{c}: {m}"),
        (Some(c), _) => c.clone(),
        (None, _) => format!("HTTP {status} from {endpoint} without an AWS error code"),
    };
    let c = code.as_deref().unwrap_or("");
    let (reason, message) = if is_throttling(c) || status == 429 {
        (Reason::Throttled, format!("{name} failed: {text}"))
    } else if is_permission(c) || (c.is_empty() && (status == 401 || status == 403)) {
        (
            Reason::Unauthorized,
            format!(
                "{name} failed: {text}; the caller needs IAM permission {}",
                op.action()
            ),
        )
    } else if is_unauthorized(c) {
        (
            Reason::Unauthorized,
            format!(
                "{name} failed: {text}; AWS rejected the credentials themselves (wrong, \
                 expired or unsigned keys): fix the access key or role first, then make \
                 sure it has IAM permission {}",
                op.action()
            ),
        )
    } else if c.ends_with(".NotFound") || c.ends_with("NotFoundException") {
        (Reason::NotFound, format!("{name} failed: {text}"))
    } else if INVALID.contains(&c) || c.ends_with(".Malformed") {
        (Reason::InvalidArgument, format!("{name} failed: {text}"))
    } else {
        (Reason::BadResponse, format!("{name} failed: {text}"))
    };
    let mut err = with_context(Error::new(reason, message), op, endpoint)
        .with_number("status", i64::from(status));
    if let Some(code) = code {
        err = err.with_detail("code", code);
    }
    err
}

fn no_credentials(name: &str, cause: &str) -> Error {
    Error::new(
        Reason::Unauthorized,
        format!(
            "{name} failed: no usable AWS credentials ({cause}); configure the default \
             credential chain (env, profile, instance or task role) or pass \
             access_key_id/secret_access_key"
        ),
    )
}

fn with_context(err: Error, op: Operation, endpoint: &str) -> Error {
    err.with_detail("operation", op.name())
        .with_detail("action", op.action())
        .with_detail("endpoint", endpoint)
}

/// The Display texts of an error's source chain, most general first, without the top
/// line and without repeats.
pub(crate) fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EP: &str = "http://127.0.0.1:5000";

    fn service(status: u16, code: Option<&str>, message: Option<&str>) -> Failure {
        Failure::Service {
            status,
            code: code.map(str::to_owned),
            message: message.map(str::to_owned),
        }
    }

    fn run(failure: Failure) -> Error {
        classify(Operation::DescribeInstances, EP, 2_000, failure)
    }

    #[test]
    fn throttling_codes_are_throttled_whatever_the_status() {
        for code in [
            "RequestLimitExceeded",
            "Throttling",
            "ThrottlingException",
            "RequestThrottled",
            "TooManyRequests",
        ] {
            let e = run(service(503, Some(code), Some("Request limit exceeded.")));
            assert_eq!(e.reason, Reason::Throttled, "{code}");
            assert_eq!(e.detail("code"), Some(code));
            assert_eq!(e.number("status"), Some(503));
        }
        let e = run(service(
            503,
            Some("RequestLimitExceeded"),
            Some("Request limit exceeded."),
        ));
        assert_eq!(
            e.message,
            "DescribeInstances failed: RequestLimitExceeded: Request limit exceeded."
        );
        assert_eq!(run(service(429, None, None)).reason, Reason::Throttled);
    }

    #[test]
    fn auth_codes_are_unauthorized_and_name_the_iam_action() {
        for code in [
            "AuthFailure",
            "UnauthorizedOperation",
            "AccessDenied",
            "AccessDeniedException",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
        ] {
            let e = run(service(403, Some(code), Some("no")));
            assert_eq!(e.reason, Reason::Unauthorized, "{code}");
            assert!(e.message.contains("ec2:DescribeInstances"), "{}", e.message);
            assert_eq!(e.detail("action"), Some("ec2:DescribeInstances"));
            assert_eq!(e.detail("operation"), Some("DescribeInstances"));
            assert_eq!(e.detail("code"), Some(code));
        }
        let e = classify(
            Operation::DescribeAutoScalingGroups,
            EP,
            1,
            service(403, Some("AccessDenied"), None),
        );
        assert_eq!(
            e.detail("action"),
            Some("autoscaling:DescribeAutoScalingGroups")
        );
    }

    #[test]
    fn rejected_credentials_are_told_apart_from_missing_permissions() {
        let e = run(service(401, Some("AuthFailure"), Some("bad key")));
        assert_eq!(e.reason, Reason::Unauthorized);
        assert!(
            e.message.contains("rejected the credentials"),
            "{}",
            e.message
        );
        let e = run(service(403, Some("UnauthorizedOperation"), None));
        assert!(e.message.contains("needs IAM permission"), "{}", e.message);
    }

    #[test]
    fn a_bare_403_is_unauthorized_and_names_the_action() {
        let e = run(service(403, None, None));
        assert_eq!(e.reason, Reason::Unauthorized);
        assert_eq!(e.detail("action"), Some("ec2:DescribeInstances"));
        assert!(e.message.contains("HTTP 403"), "{}", e.message);
    }

    #[test]
    fn credentials_that_cannot_be_loaded_are_unauthorized_not_unreachable() {
        let e = run(Failure::Dispatch {
            timed_out: false,
            cause: "failed to load credentials from the provider chain".into(),
        });
        assert_eq!(e.reason, Reason::Unauthorized);
        assert!(e.message.contains("access_key_id"), "{}", e.message);
    }

    #[test]
    fn server_errors_are_bad_responses_with_status() {
        for status in [500, 502, 503, 504] {
            let e = run(service(status, None, None));
            assert_eq!(e.reason, Reason::BadResponse);
            assert_eq!(e.number("status"), Some(i64::from(status)));
            assert_eq!(e.detail("code"), None);
            assert!(
                e.message.contains(&format!("HTTP {status}")),
                "{}",
                e.message
            );
        }
        let e = run(service(500, Some("InternalError"), Some("oops")));
        assert_eq!(e.reason, Reason::BadResponse);
        assert_eq!(e.message, "DescribeInstances failed: InternalError: oops");
    }

    #[test]
    fn unknown_codes_are_kept_in_details() {
        let e = run(service(400, Some("SomethingNew"), Some("new failure")));
        assert_eq!(e.reason, Reason::BadResponse);
        assert_eq!(e.detail("code"), Some("SomethingNew"));
        assert_eq!(e.detail("endpoint"), Some(EP));
    }

    #[test]
    fn not_found_and_invalid_parameters() {
        let e = run(service(
            400,
            Some("InvalidInstanceID.NotFound"),
            Some("gone"),
        ));
        assert_eq!(e.reason, Reason::NotFound);
        let e = run(service(
            400,
            Some("InvalidInstanceID.Malformed"),
            Some("bad"),
        ));
        assert_eq!(e.reason, Reason::InvalidArgument);
        let e = run(service(400, Some("InvalidParameterValue"), Some("bad")));
        assert_eq!(e.reason, Reason::InvalidArgument);
    }

    #[test]
    fn ecs_codes_name_the_ecs_action() {
        let ecs = |code: &str| {
            classify(
                Operation::ListTasks,
                EP,
                2_000,
                service(400, Some(code), Some("m")),
            )
        };
        let e = ecs("AccessDeniedException");
        assert_eq!(e.reason, Reason::Unauthorized);
        assert!(e.message.contains("ecs:ListTasks"), "{}", e.message);
        assert_eq!(e.detail("action"), Some("ecs:ListTasks"));
        assert_eq!(ecs("ThrottlingException").reason, Reason::Throttled);
        assert_eq!(ecs("ClusterNotFoundException").reason, Reason::NotFound);
        assert_eq!(
            ecs("InvalidParameterException").reason,
            Reason::InvalidArgument
        );
        assert_eq!(
            Operation::DescribeContainerInstances.action(),
            "ecs:DescribeContainerInstances"
        );
        assert_eq!(Operation::DescribeTasks.action(), "ecs:DescribeTasks");
    }

    #[test]
    fn transport_failures() {
        let e = run(Failure::Timeout);
        assert_eq!(e.reason, Reason::Timeout);
        assert!(e.message.contains("2000 ms"), "{}", e.message);
        let e = run(Failure::Dispatch {
            timed_out: false,
            cause: "Connection refused (os error 111)".into(),
        });
        assert_eq!(e.reason, Reason::Unreachable);
        assert_eq!(
            e.message,
            "DescribeInstances failed: cannot reach http://127.0.0.1:5000 (Connection refused (os error 111))"
        );
        let e = run(Failure::Dispatch {
            timed_out: true,
            cause: "connect timeout".into(),
        });
        assert_eq!(e.reason, Reason::Timeout);
        let e = run(Failure::Response {
            status: Some(200),
            cause: "unexpected EOF".into(),
        });
        assert_eq!(e.reason, Reason::BadResponse);
        assert_eq!(e.number("status"), Some(200));
    }

    #[test]
    fn missing_credentials_are_unauthorized() {
        let e = run(Failure::Construction {
            cause: "failed to load credentials: no providers in chain".into(),
        });
        assert_eq!(e.reason, Reason::Unauthorized);
        let e = run(Failure::Construction {
            cause: "invalid endpoint".into(),
        });
        assert_eq!(e.reason, Reason::Internal);
    }

    #[test]
    fn causes_skip_repeats() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let inner = E("refused", None);
        let mid = E("tcp connect error: refused", Some(Box::new(inner)));
        let top = E("dispatch failure", Some(Box::new(mid)));
        assert_eq!(causes(&top), "tcp connect error: refused");
        assert_eq!(causes(&E("alone", None)), "alone");
    }

    mod wire {
        use super::super::super::fake::{client_for, Fake, Reply};
        use super::super::super::InstanceQuery;
        use super::*;

        async fn describe(endpoint: &str, timeout_ms: u64) -> Error {
            client_for(endpoint, timeout_ms)
                .await
                .describe_instances(&InstanceQuery::default())
                .await
                .expect_err("must fail")
        }

        #[tokio::test]
        async fn refused_is_unreachable() {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = listener.local_addr().expect("addr").port();
            drop(listener);
            let e = describe(&format!("http://127.0.0.1:{port}"), 2_000).await;
            assert_eq!(e.reason, Reason::Unreachable, "{}", e.message);
            assert!(!e.message.contains("DispatchFailure"), "{}", e.message);
        }

        #[tokio::test]
        async fn silence_is_a_timeout() {
            let fake = Fake::start(|_: &str| Reply::Hang).await;
            let e = describe(&fake.endpoint(), 300).await;
            assert_eq!(e.reason, Reason::Timeout, "{}", e.message);
        }

        #[tokio::test]
        async fn ec2_request_limit_exceeded_is_throttled() {
            let fake = Fake::start(|_: &str| {
                Reply::status(
                    503,
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error>\
                     <Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>\
                     </Error></Errors><RequestID>r</RequestID></Response>",
                )
            })
            .await;
            let e = describe(&fake.endpoint(), 2_000).await;
            assert_eq!(e.reason, Reason::Throttled, "{}", e.message);
            assert_eq!(
                e.message,
                "DescribeInstances failed: RequestLimitExceeded: Request limit exceeded."
            );
        }

        #[tokio::test]
        async fn auth_failure_names_the_action() {
            let fake = Fake::start(|_: &str| {
                Reply::status(
                    401,
                    "<Response><Errors><Error><Code>AuthFailure</Code><Message>AWS was not able \
                     to validate the provided access credentials</Message></Error></Errors>\
                     <RequestID>r</RequestID></Response>",
                )
            })
            .await;
            let e = describe(&fake.endpoint(), 2_000).await;
            assert_eq!(e.reason, Reason::Unauthorized);
            assert!(
                e.message.contains("rejected the credentials"),
                "{}",
                e.message
            );
            assert!(e.message.ends_with("IAM permission ec2:DescribeInstances"));
        }

        #[tokio::test]
        async fn html_500_and_truncated_bodies_are_bad_responses() {
            let fake = Fake::start(|_: &str| Reply::status(500, "<html>oops</html>")).await;
            let e = describe(&fake.endpoint(), 2_000).await;
            assert_eq!(e.reason, Reason::BadResponse, "{}", e.message);
            assert_eq!(e.number("status"), Some(500));

            let fake = Fake::start(|_: &str| {
                Reply::Truncated(format!(
                    "<DescribeInstancesResponse><reservationSet>{}</reservationSet></DescribeInstancesResponse>",
                    "<item><reservationId>r</reservationId></item>".repeat(50)
                ))
            })
            .await;
            let e = describe(&fake.endpoint(), 2_000).await;
            assert_eq!(e.reason, Reason::BadResponse, "{}", e.message);

            let fake = Fake::start(|_: &str| Reply::ok("this is not xml")).await;
            let e = describe(&fake.endpoint(), 2_000).await;
            assert_eq!(e.reason, Reason::BadResponse, "{}", e.message);
        }
    }
}
