from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

ALGORITHM_CONCURRENCY: Algorithm
ALGORITHM_FIXED_WINDOW: Algorithm
ALGORITHM_GCRA: Algorithm
ALGORITHM_SLIDING_WINDOW: Algorithm
ALGORITHM_TOKEN_BUCKET: Algorithm
ALGORITHM_UNSPECIFIED: Algorithm
DESCRIPTOR: _descriptor.FileDescriptor
REASON_ANOMALY: Reason
REASON_BLOCKED: Reason
REASON_EXCEEDS_CAPACITY: Reason
REASON_OVER_LIMIT: Reason
REASON_REPUTATION: Reason
REASON_SHED: Reason
REASON_UNSPECIFIED: Reason
REASON_WITHIN_LIMIT: Reason

class Alert(_message.Message):
    __slots__ = ["detail", "ip", "kind", "scope", "score", "subject", "tenant", "time_ms"]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    detail: str
    ip: str
    kind: str
    scope: str
    score: float
    subject: str
    tenant: str
    time_ms: int
    def __init__(self, time_ms: _Optional[int] = ..., scope: _Optional[str] = ..., subject: _Optional[str] = ..., ip: _Optional[str] = ..., tenant: _Optional[str] = ..., kind: _Optional[str] = ..., score: _Optional[float] = ..., detail: _Optional[str] = ...) -> None: ...

class AuthenticateRequest(_message.Message):
    __slots__ = ["token"]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class AuthenticateResponse(_message.Message):
    __slots__ = ["all_tenants", "identity", "roles", "tenant"]
    ALL_TENANTS_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    all_tenants: bool
    identity: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    tenant: str
    def __init__(self, identity: _Optional[str] = ..., tenant: _Optional[str] = ..., all_tenants: bool = ..., roles: _Optional[_Iterable[str]] = ...) -> None: ...

class BackendStats(_message.Message):
    __slots__ = ["address", "connections_up", "decided_degraded", "decided_remote", "denied_from_cache", "kind", "on_failure", "state", "writes"]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_UP_FIELD_NUMBER: _ClassVar[int]
    DECIDED_DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DECIDED_REMOTE_FIELD_NUMBER: _ClassVar[int]
    DENIED_FROM_CACHE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WRITES_FIELD_NUMBER: _ClassVar[int]
    address: str
    connections_up: int
    decided_degraded: int
    decided_remote: int
    denied_from_cache: int
    kind: str
    on_failure: str
    state: str
    writes: int
    def __init__(self, kind: _Optional[str] = ..., address: _Optional[str] = ..., state: _Optional[str] = ..., on_failure: _Optional[str] = ..., connections_up: _Optional[int] = ..., decided_remote: _Optional[int] = ..., denied_from_cache: _Optional[int] = ..., decided_degraded: _Optional[int] = ..., writes: _Optional[int] = ...) -> None: ...

class Check(_message.Message):
    __slots__ = ["hits", "ip", "key", "limit", "now_ms", "route", "rule", "subject", "tenant"]
    HITS_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NOW_MS_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    hits: int
    ip: str
    key: str
    limit: Limit
    now_ms: int
    route: str
    rule: str
    subject: str
    tenant: str
    def __init__(self, tenant: _Optional[str] = ..., key: _Optional[str] = ..., subject: _Optional[str] = ..., hits: _Optional[int] = ..., now_ms: _Optional[int] = ..., rule: _Optional[str] = ..., limit: _Optional[_Union[Limit, _Mapping]] = ..., ip: _Optional[str] = ..., route: _Optional[str] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ["checks"]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    checks: _containers.RepeatedCompositeFieldContainer[Check]
    def __init__(self, checks: _Optional[_Iterable[_Union[Check, _Mapping]]] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ["verdicts"]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    verdicts: _containers.RepeatedCompositeFieldContainer[Verdict]
    def __init__(self, verdicts: _Optional[_Iterable[_Union[Verdict, _Mapping]]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ["check_index", "code", "message", "retry_after_ms"]
    class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    CHECK_INDEX_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    CODE_FORBIDDEN: Error.Code
    CODE_FRAME_TOO_LARGE: Error.Code
    CODE_INTERNAL: Error.Code
    CODE_INVALID_ARGUMENT: Error.Code
    CODE_INVALID_CONFIGURATION: Error.Code
    CODE_MALFORMED_MESSAGE: Error.Code
    CODE_OVERLOADED: Error.Code
    CODE_QUOTA_EXCEEDED: Error.Code
    CODE_SHUTTING_DOWN: Error.Code
    CODE_UNAUTHENTICATED: Error.Code
    CODE_UNAVAILABLE: Error.Code
    CODE_UNKNOWN_RULE: Error.Code
    CODE_UNKNOWN_TENANT: Error.Code
    CODE_UNSPECIFIED: Error.Code
    CODE_UNSUPPORTED: Error.Code
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    check_index: int
    code: Error.Code
    message: str
    retry_after_ms: int
    def __init__(self, code: _Optional[_Union[Error.Code, str]] = ..., message: _Optional[str] = ..., check_index: _Optional[int] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class FeatureFlag(_message.Message):
    __slots__ = ["enabled", "name", "overridden", "rollout_percent", "shadow"]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OVERRIDDEN_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_PERCENT_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    name: str
    overridden: bool
    rollout_percent: float
    shadow: bool
    def __init__(self, name: _Optional[str] = ..., enabled: bool = ..., rollout_percent: _Optional[float] = ..., shadow: bool = ..., overridden: bool = ...) -> None: ...

class FlagChange(_message.Message):
    __slots__ = ["enabled", "name", "rollout_percent", "shadow"]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_PERCENT_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    name: str
    rollout_percent: float
    shadow: bool
    def __init__(self, name: _Optional[str] = ..., enabled: bool = ..., rollout_percent: _Optional[float] = ..., shadow: bool = ...) -> None: ...

class FlagsRequest(_message.Message):
    __slots__ = ["changes"]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[FlagChange]
    def __init__(self, changes: _Optional[_Iterable[_Union[FlagChange, _Mapping]]] = ...) -> None: ...

class FlagsResponse(_message.Message):
    __slots__ = ["flags"]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    flags: _containers.RepeatedCompositeFieldContainer[FeatureFlag]
    def __init__(self, flags: _Optional[_Iterable[_Union[FeatureFlag, _Mapping]]] = ...) -> None: ...

class GetReputationRequest(_message.Message):
    __slots__ = ["recent_events", "subject", "tenant"]
    RECENT_EVENTS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    recent_events: int
    subject: str
    tenant: str
    def __init__(self, tenant: _Optional[str] = ..., subject: _Optional[str] = ..., recent_events: _Optional[int] = ...) -> None: ...

class GetReputationResponse(_message.Message):
    __slots__ = ["recent_events", "reputation", "tracked"]
    RECENT_EVENTS_FIELD_NUMBER: _ClassVar[int]
    REPUTATION_FIELD_NUMBER: _ClassVar[int]
    TRACKED_FIELD_NUMBER: _ClassVar[int]
    recent_events: _containers.RepeatedCompositeFieldContainer[RecordedEvent]
    reputation: Reputation
    tracked: bool
    def __init__(self, reputation: _Optional[_Union[Reputation, _Mapping]] = ..., recent_events: _Optional[_Iterable[_Union[RecordedEvent, _Mapping]]] = ..., tracked: bool = ...) -> None: ...

class GetTierRequest(_message.Message):
    __slots__ = ["subject", "tenant"]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    subject: str
    tenant: str
    def __init__(self, tenant: _Optional[str] = ..., subject: _Optional[str] = ...) -> None: ...

class Limit(_message.Message):
    __slots__ = ["algorithm", "burst", "limit", "period_ms"]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_MS_FIELD_NUMBER: _ClassVar[int]
    algorithm: Algorithm
    burst: int
    limit: int
    period_ms: int
    def __init__(self, limit: _Optional[int] = ..., period_ms: _Optional[int] = ..., burst: _Optional[int] = ..., algorithm: _Optional[_Union[Algorithm, str]] = ...) -> None: ...

class ListReputationsRequest(_message.Message):
    __slots__ = ["all_tenants", "order", "page_size", "page_token", "tenant"]
    class Order(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    ALL_TENANTS_FIELD_NUMBER: _ClassVar[int]
    ORDER_BEST: ListReputationsRequest.Order
    ORDER_FIELD_NUMBER: _ClassVar[int]
    ORDER_WORST: ListReputationsRequest.Order
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    all_tenants: bool
    order: ListReputationsRequest.Order
    page_size: int
    page_token: str
    tenant: str
    def __init__(self, tenant: _Optional[str] = ..., all_tenants: bool = ..., order: _Optional[_Union[ListReputationsRequest.Order, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListReputationsResponse(_message.Message):
    __slots__ = ["next_page_token", "reputations", "total"]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REPUTATIONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    next_page_token: str
    reputations: _containers.RepeatedCompositeFieldContainer[Reputation]
    total: int
    def __init__(self, reputations: _Optional[_Iterable[_Union[Reputation, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class ListTiersRequest(_message.Message):
    __slots__ = ["all_tenants", "page_size", "page_token", "tenant", "tier"]
    ALL_TENANTS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    all_tenants: bool
    page_size: int
    page_token: str
    tenant: str
    tier: str
    def __init__(self, tenant: _Optional[str] = ..., all_tenants: bool = ..., tier: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTiersResponse(_message.Message):
    __slots__ = ["assignments", "next_page_token", "tiers", "total"]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[TierAssignment]
    next_page_token: str
    tiers: _containers.RepeatedCompositeFieldContainer[TierDefinition]
    total: int
    def __init__(self, tiers: _Optional[_Iterable[_Union[TierDefinition, _Mapping]]] = ..., assignments: _Optional[_Iterable[_Union[TierAssignment, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class Outcome(_message.Message):
    __slots__ = ["ip", "route", "status", "subject", "tenant", "time_ms"]
    IP_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    ip: str
    route: str
    status: int
    subject: str
    tenant: str
    time_ms: int
    def __init__(self, tenant: _Optional[str] = ..., subject: _Optional[str] = ..., ip: _Optional[str] = ..., route: _Optional[str] = ..., status: _Optional[int] = ..., time_ms: _Optional[int] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ["payload"]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ["payload"]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class RecordEventsRequest(_message.Message):
    __slots__ = ["durable", "events"]
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    durable: bool
    events: _containers.RepeatedCompositeFieldContainer[ReputationEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[ReputationEvent, _Mapping]]] = ..., durable: bool = ...) -> None: ...

class RecordEventsResponse(_message.Message):
    __slots__ = ["committed", "recorded"]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    committed: bool
    recorded: int
    def __init__(self, recorded: _Optional[int] = ..., committed: bool = ...) -> None: ...

class RecordedEvent(_message.Message):
    __slots__ = ["at_ms", "kind", "note", "weight"]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    at_ms: int
    kind: str
    note: str
    weight: float
    def __init__(self, kind: _Optional[str] = ..., weight: _Optional[float] = ..., at_ms: _Optional[int] = ..., note: _Optional[str] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ["key", "lease_id", "limit", "now_ms", "rule", "tenant"]
    KEY_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NOW_MS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    key: str
    lease_id: int
    limit: Limit
    now_ms: int
    rule: str
    tenant: str
    def __init__(self, tenant: _Optional[str] = ..., key: _Optional[str] = ..., lease_id: _Optional[int] = ..., rule: _Optional[str] = ..., limit: _Optional[_Union[Limit, _Mapping]] = ..., now_ms: _Optional[int] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ["released"]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    def __init__(self, released: bool = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ["generation", "needs_restart", "rules_added", "rules_changed", "rules_removed", "source"]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    NEEDS_RESTART_FIELD_NUMBER: _ClassVar[int]
    RULES_ADDED_FIELD_NUMBER: _ClassVar[int]
    RULES_CHANGED_FIELD_NUMBER: _ClassVar[int]
    RULES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    generation: int
    needs_restart: _containers.RepeatedScalarFieldContainer[str]
    rules_added: _containers.RepeatedScalarFieldContainer[str]
    rules_changed: _containers.RepeatedScalarFieldContainer[str]
    rules_removed: _containers.RepeatedScalarFieldContainer[str]
    source: str
    def __init__(self, source: _Optional[str] = ..., rules_added: _Optional[_Iterable[str]] = ..., rules_changed: _Optional[_Iterable[str]] = ..., rules_removed: _Optional[_Iterable[str]] = ..., needs_restart: _Optional[_Iterable[str]] = ..., generation: _Optional[int] = ...) -> None: ...

class RemoveTierRequest(_message.Message):
    __slots__ = ["subject", "tenant"]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    subject: str
    tenant: str
    def __init__(self, tenant: _Optional[str] = ..., subject: _Optional[str] = ...) -> None: ...

class ReportLoadRequest(_message.Message):
    __slots__ = ["error_rate", "in_flight", "latency_p50_us", "latency_p99_us", "service"]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_US_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_US_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    error_rate: float
    in_flight: int
    latency_p50_us: int
    latency_p99_us: int
    service: str
    def __init__(self, service: _Optional[str] = ..., in_flight: _Optional[int] = ..., latency_p50_us: _Optional[int] = ..., latency_p99_us: _Optional[int] = ..., error_rate: _Optional[float] = ...) -> None: ...

class ReportLoadResponse(_message.Message):
    __slots__ = ["load_factor", "smoothed_p99_us", "tiers"]
    LOAD_FACTOR_FIELD_NUMBER: _ClassVar[int]
    SMOOTHED_P99_US_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    load_factor: float
    smoothed_p99_us: int
    tiers: _containers.RepeatedCompositeFieldContainer[TierLoad]
    def __init__(self, load_factor: _Optional[float] = ..., smoothed_p99_us: _Optional[int] = ..., tiers: _Optional[_Iterable[_Union[TierLoad, _Mapping]]] = ...) -> None: ...

class ReportOutcomeRequest(_message.Message):
    __slots__ = ["outcomes"]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[Outcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[Outcome, _Mapping]]] = ...) -> None: ...

class ReportOutcomeResponse(_message.Message):
    __slots__ = ["recorded"]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    recorded: int
    def __init__(self, recorded: _Optional[int] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ["top"]
    TOP_FIELD_NUMBER: _ClassVar[int]
    top: int
    def __init__(self, top: _Optional[int] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ["json"]
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class Reputation(_message.Message):
    __slots__ = ["blocked", "events", "multiplier", "neutral_at_ms", "pinned", "score", "subject", "tenant", "updated_ms"]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    NEUTRAL_AT_MS_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    blocked: bool
    events: int
    multiplier: float
    neutral_at_ms: int
    pinned: bool
    score: float
    subject: str
    tenant: str
    updated_ms: int
    def __init__(self, tenant: _Optional[str] = ..., subject: _Optional[str] = ..., score: _Optional[float] = ..., pinned: bool = ..., updated_ms: _Optional[int] = ..., neutral_at_ms: _Optional[int] = ..., multiplier: _Optional[float] = ..., blocked: bool = ..., events: _Optional[int] = ...) -> None: ...

class ReputationEvent(_message.Message):
    __slots__ = ["at_ms", "kind", "note", "subject", "tenant", "weight"]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    at_ms: int
    kind: str
    note: str
    subject: str
    tenant: str
    weight: float
    def __init__(self, tenant: _Optional[str] = ..., subject: _Optional[str] = ..., kind: _Optional[str] = ..., weight: _Optional[float] = ..., at_ms: _Optional[int] = ..., note: _Optional[str] = ...) -> None: ...

class Request(_message.Message):
    __slots__ = ["authenticate", "check", "flags", "get_reputation", "get_tier", "id", "list_reputations", "list_tiers", "ping", "record_events", "release", "reload", "remove_tier", "report", "report_load", "report_outcome", "set_reputation", "set_tier", "snapshot", "stats", "top", "watch_alerts"]
    AUTHENTICATE_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    GET_REPUTATION_FIELD_NUMBER: _ClassVar[int]
    GET_TIER_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LIST_REPUTATIONS_FIELD_NUMBER: _ClassVar[int]
    LIST_TIERS_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    RECORD_EVENTS_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    RELOAD_FIELD_NUMBER: _ClassVar[int]
    REMOVE_TIER_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    REPORT_LOAD_FIELD_NUMBER: _ClassVar[int]
    REPORT_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SET_REPUTATION_FIELD_NUMBER: _ClassVar[int]
    SET_TIER_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    WATCH_ALERTS_FIELD_NUMBER: _ClassVar[int]
    authenticate: AuthenticateRequest
    check: CheckRequest
    flags: FlagsRequest
    get_reputation: GetReputationRequest
    get_tier: GetTierRequest
    id: int
    list_reputations: ListReputationsRequest
    list_tiers: ListTiersRequest
    ping: PingRequest
    record_events: RecordEventsRequest
    release: ReleaseRequest
    reload: ReloadRequest
    remove_tier: RemoveTierRequest
    report: ReportRequest
    report_load: ReportLoadRequest
    report_outcome: ReportOutcomeRequest
    set_reputation: SetReputationRequest
    set_tier: SetTierRequest
    snapshot: SnapshotRequest
    stats: StatsRequest
    top: TopRequest
    watch_alerts: WatchAlertsRequest
    def __init__(self, id: _Optional[int] = ..., check: _Optional[_Union[CheckRequest, _Mapping]] = ..., ping: _Optional[_Union[PingRequest, _Mapping]] = ..., release: _Optional[_Union[ReleaseRequest, _Mapping]] = ..., stats: _Optional[_Union[StatsRequest, _Mapping]] = ..., reload: _Optional[_Union[ReloadRequest, _Mapping]] = ..., snapshot: _Optional[_Union[SnapshotRequest, _Mapping]] = ..., record_events: _Optional[_Union[RecordEventsRequest, _Mapping]] = ..., get_reputation: _Optional[_Union[GetReputationRequest, _Mapping]] = ..., list_reputations: _Optional[_Union[ListReputationsRequest, _Mapping]] = ..., set_reputation: _Optional[_Union[SetReputationRequest, _Mapping]] = ..., flags: _Optional[_Union[FlagsRequest, _Mapping]] = ..., set_tier: _Optional[_Union[SetTierRequest, _Mapping]] = ..., get_tier: _Optional[_Union[GetTierRequest, _Mapping]] = ..., list_tiers: _Optional[_Union[ListTiersRequest, _Mapping]] = ..., remove_tier: _Optional[_Union[RemoveTierRequest, _Mapping]] = ..., report_load: _Optional[_Union[ReportLoadRequest, _Mapping]] = ..., report_outcome: _Optional[_Union[ReportOutcomeRequest, _Mapping]] = ..., watch_alerts: _Optional[_Union[WatchAlertsRequest, _Mapping]] = ..., authenticate: _Optional[_Union[AuthenticateRequest, _Mapping]] = ..., top: _Optional[_Union[TopRequest, _Mapping]] = ..., report: _Optional[_Union[ReportRequest, _Mapping]] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ["authenticate", "check", "error", "flags", "get_reputation", "id", "list_reputations", "list_tiers", "ping", "record_events", "release", "reload", "report", "report_load", "report_outcome", "set_reputation", "snapshot", "stats", "tier", "top", "watch_alerts"]
    AUTHENTICATE_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    GET_REPUTATION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LIST_REPUTATIONS_FIELD_NUMBER: _ClassVar[int]
    LIST_TIERS_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    RECORD_EVENTS_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    RELOAD_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    REPORT_LOAD_FIELD_NUMBER: _ClassVar[int]
    REPORT_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SET_REPUTATION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    WATCH_ALERTS_FIELD_NUMBER: _ClassVar[int]
    authenticate: AuthenticateResponse
    check: CheckResponse
    error: Error
    flags: FlagsResponse
    get_reputation: GetReputationResponse
    id: int
    list_reputations: ListReputationsResponse
    list_tiers: ListTiersResponse
    ping: PingResponse
    record_events: RecordEventsResponse
    release: ReleaseResponse
    reload: ReloadResponse
    report: ReportResponse
    report_load: ReportLoadResponse
    report_outcome: ReportOutcomeResponse
    set_reputation: SetReputationResponse
    snapshot: SnapshotResponse
    stats: StatsResponse
    tier: TierResponse
    top: TopResponse
    watch_alerts: WatchAlertsResponse
    def __init__(self, id: _Optional[int] = ..., check: _Optional[_Union[CheckResponse, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., ping: _Optional[_Union[PingResponse, _Mapping]] = ..., release: _Optional[_Union[ReleaseResponse, _Mapping]] = ..., stats: _Optional[_Union[StatsResponse, _Mapping]] = ..., reload: _Optional[_Union[ReloadResponse, _Mapping]] = ..., snapshot: _Optional[_Union[SnapshotResponse, _Mapping]] = ..., record_events: _Optional[_Union[RecordEventsResponse, _Mapping]] = ..., get_reputation: _Optional[_Union[GetReputationResponse, _Mapping]] = ..., list_reputations: _Optional[_Union[ListReputationsResponse, _Mapping]] = ..., set_reputation: _Optional[_Union[SetReputationResponse, _Mapping]] = ..., flags: _Optional[_Union[FlagsResponse, _Mapping]] = ..., tier: _Optional[_Union[TierResponse, _Mapping]] = ..., list_tiers: _Optional[_Union[ListTiersResponse, _Mapping]] = ..., report_load: _Optional[_Union[ReportLoadResponse, _Mapping]] = ..., report_outcome: _Optional[_Union[ReportOutcomeResponse, _Mapping]] = ..., watch_alerts: _Optional[_Union[WatchAlertsResponse, _Mapping]] = ..., authenticate: _Optional[_Union[AuthenticateResponse, _Mapping]] = ..., top: _Optional[_Union[TopResponse, _Mapping]] = ..., report: _Optional[_Union[ReportResponse, _Mapping]] = ...) -> None: ...

class SetReputationRequest(_message.Message):
    __slots__ = ["action", "score", "subject", "tenant"]
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ACTION_PIN: SetReputationRequest.Action
    ACTION_RESET: SetReputationRequest.Action
    ACTION_SET: SetReputationRequest.Action
    ACTION_UNPIN: SetReputationRequest.Action
    ACTION_UNSPECIFIED: SetReputationRequest.Action
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    action: SetReputationRequest.Action
    score: float
    subject: str
    tenant: str
    def __init__(self, tenant: _Optional[str] = ..., subject: _Optional[str] = ..., action: _Optional[_Union[SetReputationRequest.Action, str]] = ..., score: _Optional[float] = ...) -> None: ...

class SetReputationResponse(_message.Message):
    __slots__ = ["reputation"]
    REPUTATION_FIELD_NUMBER: _ClassVar[int]
    reputation: Reputation
    def __init__(self, reputation: _Optional[_Union[Reputation, _Mapping]] = ...) -> None: ...

class SetTierRequest(_message.Message):
    __slots__ = ["subject", "tenant", "tier"]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    subject: str
    tenant: str
    tier: str
    def __init__(self, tenant: _Optional[str] = ..., subject: _Optional[str] = ..., tier: _Optional[str] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ["bytes", "duration_us", "entries", "path"]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    DURATION_US_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    duration_us: int
    entries: int
    path: str
    def __init__(self, path: _Optional[str] = ..., entries: _Optional[int] = ..., bytes: _Optional[int] = ..., duration_us: _Optional[int] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ["allowed", "backend", "checks", "clock", "config_generation", "config_source", "connections_open", "connections_total", "denied", "entries", "errors", "events_dropped", "evictions", "max_entries", "reclaimed", "requests", "shards", "snapshot_path", "uptime_ms", "version"]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    CONFIG_GENERATION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_OPEN_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DENIED_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    RECLAIMED_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_PATH_FIELD_NUMBER: _ClassVar[int]
    UPTIME_MS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    allowed: int
    backend: BackendStats
    checks: int
    clock: str
    config_generation: int
    config_source: str
    connections_open: int
    connections_total: int
    denied: int
    entries: int
    errors: int
    events_dropped: int
    evictions: int
    max_entries: int
    reclaimed: int
    requests: int
    shards: int
    snapshot_path: str
    uptime_ms: int
    version: str
    def __init__(self, version: _Optional[str] = ..., uptime_ms: _Optional[int] = ..., checks: _Optional[int] = ..., allowed: _Optional[int] = ..., denied: _Optional[int] = ..., entries: _Optional[int] = ..., max_entries: _Optional[int] = ..., evictions: _Optional[int] = ..., reclaimed: _Optional[int] = ..., shards: _Optional[int] = ..., connections_open: _Optional[int] = ..., connections_total: _Optional[int] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., events_dropped: _Optional[int] = ..., clock: _Optional[str] = ..., config_generation: _Optional[int] = ..., config_source: _Optional[str] = ..., snapshot_path: _Optional[str] = ..., backend: _Optional[_Union[BackendStats, _Mapping]] = ...) -> None: ...

class TierAssignment(_message.Message):
    __slots__ = ["assigned_ms", "subject", "tenant", "tier"]
    ASSIGNED_MS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    assigned_ms: int
    subject: str
    tenant: str
    tier: str
    def __init__(self, tenant: _Optional[str] = ..., subject: _Optional[str] = ..., tier: _Optional[str] = ..., assigned_ms: _Optional[int] = ...) -> None: ...

class TierDefinition(_message.Message):
    __slots__ = ["multiplier", "name", "priority", "subjects"]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    multiplier: float
    name: str
    priority: int
    subjects: int
    def __init__(self, name: _Optional[str] = ..., multiplier: _Optional[float] = ..., priority: _Optional[int] = ..., subjects: _Optional[int] = ...) -> None: ...

class TierLoad(_message.Message):
    __slots__ = ["demand", "multiplier", "tier"]
    DEMAND_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    demand: float
    multiplier: float
    tier: str
    def __init__(self, tier: _Optional[str] = ..., multiplier: _Optional[float] = ..., demand: _Optional[float] = ...) -> None: ...

class TierResponse(_message.Message):
    __slots__ = ["assigned", "assignment"]
    ASSIGNED_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    assigned: bool
    assignment: TierAssignment
    def __init__(self, assigned: bool = ..., assignment: _Optional[_Union[TierAssignment, _Mapping]] = ...) -> None: ...

class TopEntry(_message.Message):
    __slots__ = ["error", "key", "rate", "value"]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    error: float
    key: str
    rate: float
    value: float
    def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ..., rate: _Optional[float] = ..., error: _Optional[float] = ...) -> None: ...

class TopList(_message.Message):
    __slots__ = ["dimension", "entries", "measure"]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    MEASURE_FIELD_NUMBER: _ClassVar[int]
    dimension: str
    entries: _containers.RepeatedCompositeFieldContainer[TopEntry]
    measure: str
    def __init__(self, dimension: _Optional[str] = ..., measure: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[TopEntry, _Mapping]]] = ...) -> None: ...

class TopRequest(_message.Message):
    __slots__ = ["count"]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class TopResponse(_message.Message):
    __slots__ = ["denied", "lists", "requests", "window_ms"]
    DENIED_FIELD_NUMBER: _ClassVar[int]
    LISTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    denied: int
    lists: _containers.RepeatedCompositeFieldContainer[TopList]
    requests: int
    window_ms: int
    def __init__(self, window_ms: _Optional[int] = ..., requests: _Optional[int] = ..., denied: _Optional[int] = ..., lists: _Optional[_Iterable[_Union[TopList, _Mapping]]] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ["algorithm", "allowed", "anomaly", "lease_id", "limit", "limit_index", "multiplier", "reason", "remaining", "reputation", "reset_after_ms", "retry_after_ms", "rule", "tier", "would_deny", "would_deny_reason"]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    ANOMALY_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    REPUTATION_FIELD_NUMBER: _ClassVar[int]
    RESET_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    WOULD_DENY_FIELD_NUMBER: _ClassVar[int]
    WOULD_DENY_REASON_FIELD_NUMBER: _ClassVar[int]
    algorithm: Algorithm
    allowed: bool
    anomaly: str
    lease_id: int
    limit: int
    limit_index: int
    multiplier: float
    reason: Reason
    remaining: int
    reputation: float
    reset_after_ms: int
    retry_after_ms: int
    rule: str
    tier: str
    would_deny: bool
    would_deny_reason: Reason
    def __init__(self, allowed: bool = ..., limit: _Optional[int] = ..., remaining: _Optional[int] = ..., reset_after_ms: _Optional[int] = ..., retry_after_ms: _Optional[int] = ..., rule: _Optional[str] = ..., algorithm: _Optional[_Union[Algorithm, str]] = ..., lease_id: _Optional[int] = ..., reason: _Optional[_Union[Reason, str]] = ..., limit_index: _Optional[int] = ..., reputation: _Optional[float] = ..., multiplier: _Optional[float] = ..., would_deny: bool = ..., would_deny_reason: _Optional[_Union[Reason, str]] = ..., tier: _Optional[str] = ..., anomaly: _Optional[str] = ...) -> None: ...

class WatchAlertsRequest(_message.Message):
    __slots__ = ["kinds", "recent", "tenant"]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    recent: int
    tenant: str
    def __init__(self, kinds: _Optional[_Iterable[str]] = ..., tenant: _Optional[str] = ..., recent: _Optional[int] = ...) -> None: ...

class WatchAlertsResponse(_message.Message):
    __slots__ = ["alerts", "dropped"]
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    dropped: int
    def __init__(self, alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ..., dropped: _Optional[int] = ...) -> None: ...

class Algorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
