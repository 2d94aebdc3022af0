//! What every endpoint serves besides the service: health, gRPC-web with CORS.

use aegis_platform::auth::Role;
use aegis_proto::aegis::cases::v1 as pb;
use aegis_test_support::TestAegis;
use prost::Message;

use crate::support::*;

#[tokio::test]
async fn grpc_web_clients_reach_the_service_over_http1() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let case = create_case(&mut analyst, "Seen from a browser", pb::Severity::High).await;

    let message = pb::GetCaseRequest {
        case_id: case.number.clone(),
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&message);
    let response = reqwest::Client::builder()
        .http1_only()
        .build()
        .unwrap()
        .post(format!(
            "http://{}/aegis.cases.v1.CaseService/GetCase",
            aegis.addr()
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", "https://aegis.example.com")
        .header(
            "authorization",
            format!("Bearer {}", aegis.token("web", &[Role::Viewer])),
        )
        .body(frame)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .contains_key("access-control-allow-origin")
    );
    let body = response.bytes().await.unwrap();
    assert_eq!(body[0], 0, "the first frame is the message");
    let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    let reply = pb::GetCaseResponse::decode(&body[5..5 + length]).unwrap();
    assert_eq!(reply.case.unwrap().id, case.id);
    let trailers = String::from_utf8_lossy(&body[5 + length + 5..]);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
}

#[tokio::test]
async fn a_body_that_is_not_the_rpcs_message_is_invalid_argument() {
    let aegis = TestAegis::start().await;
    let token = aegis.token("web", &[Role::Viewer]);
    // A varint where GetCaseRequest.case_id (a string) belongs, invalid UTF-8, and a frame
    // whose length runs past the body.
    let bodies: [&[u8]; 3] = [
        &[0, 0, 0, 0, 2, 0x08, 0x05],
        &[0, 0, 0, 0, 4, 0x0a, 0x02, 0xff, 0xfe],
        &[0, 0, 0, 0, 9, 0x0a, 0x01],
    ];

    for body in bodies {
        let response = reqwest::Client::new()
            .post(format!(
                "http://{}/aegis.cases.v1.CaseService/GetCase",
                aegis.addr()
            ))
            .header("content-type", "application/grpc-web+proto")
            .header("authorization", format!("Bearer {token}"))
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let trailers = String::from_utf8_lossy(&bytes).to_lowercase();
        let status = headers
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned())
            .or_else(|| {
                trailers.split("grpc-status:").nth(1).map(|rest| {
                    rest.trim_start()
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect()
                })
            });
        assert_eq!(
            status.as_deref(),
            Some("3"),
            "{body:?}: {headers:?} {trailers}"
        );
    }
}

#[tokio::test]
async fn cors_preflight_allows_grpc_web_headers() {
    let aegis = TestAegis::start().await;

    let response = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!(
                "http://{}/aegis.cases.v1.CaseService/ListCases",
                aegis.addr()
            ),
        )
        .header("origin", "https://aegis.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-grpc-web",
        )
        .send()
        .await
        .unwrap();

    assert!(response.status().is_success(), "{}", response.status());
    let allowed = response.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("x-grpc-web"),
        "{allowed}"
    );
}

#[tokio::test]
async fn health_reports_serving_for_the_server_and_the_cases_service() {
    use tonic_health_check::*;
    let aegis = TestAegis::start().await;
    let mut health = HealthClient::new(aegis.channel().await);

    for service in ["", "aegis.cases.v1.CaseService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    aegis.stop().await;
}

mod tonic_health_check {
    pub use aegis_test_support::health::{HealthCheckRequest, HealthClient, ServingStatus};
}

#[tokio::test]
async fn health_turns_not_serving_when_the_server_drains() {
    use tonic_health_check::*;
    let aegis = TestAegis::start().await;
    let mut health = HealthClient::new(aegis.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "aegis.cases.v1.CaseService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let stopping = tokio::spawn(aegis.stop());
    let next = watch.message().await.unwrap().unwrap();

    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_contract_not_served_here_says_so() {
    use aegis_proto::aegis::exceptions::v1::{
        GetRiskExceptionRequest, risk_exception_service_client::RiskExceptionServiceClient,
    };
    let aegis = TestAegis::start().await;
    let mut exceptions = RiskExceptionServiceClient::new(aegis.channel().await);

    let error = exceptions
        .get_risk_exception(GetRiskExceptionRequest::default())
        .await
        .unwrap_err();

    assert_eq!(error.code(), tonic::Code::Unimplemented);
    assert!(
        error
            .message()
            .contains("aegis.exceptions.v1.RiskExceptionService is not served")
            && error.message().contains("aegis.cases.v1.CaseService"),
        "{}",
        error.message()
    );
}
