"""How SSE bytes become a request's measurements: split reads, reasoning vs answer, usage, errors."""

import pytest

from tasks.loadtest.record import RequestRecord, StreamAccumulator
from tests.loadtest_support import chat_chunk, sse, usage_chunk


def feed_all(reads: list[tuple[float, bytes]], end: float) -> RequestRecord:
    acc = StreamAccumulator(RequestRecord(index=0, intended_s=0.0, sent_s=1.0))
    for t, data in reads:
        acc.feed(t, data)
    return acc.finish(end)


def completion(text: str) -> dict:
    return {"object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": None}]}


def test_separated_reasoning_then_answer_gives_each_metric():
    rec = feed_all([
        (1.2, sse(chat_chunk(content=""))),  # vLLM sends its role chunk with the first token
        (1.3, sse(chat_chunk(reasoning="Hmm"))),
        (1.4, sse(chat_chunk(reasoning=" ok"))),
        (1.6, sse(chat_chunk(content="Yes"))),
        (1.7, sse(chat_chunk(content="!", finish="stop"))),
        (1.75, sse(usage_chunk(9, 6)) + sse("[DONE]")),
    ], end=1.8)
    assert rec.ok and rec.finish_reason == "stop"
    assert (rec.reasoning_chunks, rec.answer_chunks) == (2, 2)
    assert rec.ttft_s == pytest.approx(0.2) and rec.ttfa_s == pytest.approx(0.6)
    assert rec.tpot_s == pytest.approx((1.7 - 1.2) / (6 - 1))
    assert rec.e2e_s == pytest.approx(0.8)
    assert rec.chunk_gaps_s == pytest.approx([0.1, 0.2, 0.1])
    assert (rec.prompt_tokens, rec.output_tokens) == (9, 6)
    # 6 server tokens over 5 choice events (role chunk included): one token per event
    assert rec.choice_events == 5 and rec.token_event_gap == 1 and rec.one_token_per_event
    assert (rec.reasoning_tokens, rec.answer_tokens) == (2, 4) and not rec.multi_token_events


def test_usage_reasoning_tokens_win_over_chunk_counts():
    rec = feed_all([(1.1, sse(chat_chunk(reasoning="a b c"))), (1.2, sse(chat_chunk(content="d"))),
                    (1.3, sse(usage_chunk(5, 30, reasoning=21)) + sse("[DONE]"))], end=1.3)
    assert (rec.reasoning_tokens, rec.answer_tokens) == (21, 9)
    assert rec.token_event_gap == 28 and rec.multi_token_events and not rec.one_token_per_event


def test_inline_think_close_splits_reasoning_from_answer_in_content():
    rec = feed_all([(1.1, sse(chat_chunk(content="let me think"))), (1.2, sse(chat_chunk(content="</th"))),
                    (1.3, sse(chat_chunk(content="ink>\n\nFour"))), (1.4, sse(chat_chunk(content="."))),
                    (1.5, sse("[DONE]"))], end=1.5)
    assert (rec.reasoning_chunks, rec.answer_chunks) == (3, 1)
    assert rec.ttft_s == pytest.approx(0.1) and rec.ttfa_s == pytest.approx(0.4)


def test_completions_text_counts_as_answer_without_a_think_tag():
    rec = feed_all([(1.1, sse(completion("a"))), (1.2, sse(completion("b"))),
                    (1.3, sse({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}) + sse("[DONE]"))],
                   end=1.35)
    assert (rec.reasoning_chunks, rec.answer_chunks) == (0, 2)
    assert rec.ttft_s == rec.ttfa_s == pytest.approx(0.1) and rec.tpot_s == pytest.approx(0.1)
    assert rec.reasoning_tokens == 0 and rec.answer_tokens == 2


def test_events_split_across_reads_and_crlf_framing_parse():
    raw = sse(chat_chunk(content="Hello")).replace(b"\n", b"\r\n") + sse("[DONE]")
    rec = feed_all([(1.1, raw[:7]), (1.2, raw[7:20]), (1.3, raw[20:])], end=1.4)
    assert rec.ok and rec.answer_chunks == 1
    assert rec.first_token_s == pytest.approx(1.3)  # the event completes in the third read


def test_chunks_in_one_read_share_its_timestamp_and_count_as_coalesced():
    rec = feed_all([(1.1, sse(chat_chunk(content="a")) + sse(chat_chunk(content="b")) + sse(chat_chunk(content="c"))),
                    (1.2, sse(chat_chunk(content="d")) + sse("[DONE]"))], end=1.2)
    assert rec.chunk_gaps_s == pytest.approx([0.0, 0.0, 0.1])
    assert rec.coalesced_chunks == 2


@pytest.mark.parametrize(("reads", "error"), [
    ([sse(chat_chunk(content="a"))], "incomplete_stream"),
    ([sse(chat_chunk(content="a")), sse({"error": {"message": "engine died", "code": 500}})], "stream_error"),
    ([b"data: {not json\n\n"], "bad_payload"),
])
def test_broken_streams_are_errors_with_a_class(reads, error):
    rec = feed_all([(1.1 + i / 10, r) for i, r in enumerate(reads)], end=2.0)
    assert not rec.ok and rec.error == error and rec.error_detail


def test_no_usage_means_no_token_counts_and_no_tpot():
    rec = feed_all([(1.1, sse(chat_chunk(content="a"))), (1.2, sse(chat_chunk(content="b")) + sse("[DONE]"))], end=1.2)
    assert rec.output_tokens is None and rec.tpot_s is None and rec.reasoning_tokens is None


def test_json_row_carries_every_derived_metric_in_ms():
    rec = feed_all([(1.25, sse(chat_chunk(content="a"))), (1.5, sse(chat_chunk(content="b"))),
                    (1.5, sse(usage_chunk(1, 2)) + sse("[DONE]"))], end=1.5)
    rec.intended_s = 0.75
    row = rec.to_json()
    assert row["ttft_ms"] == 250.0 and row["tpot_ms"] == 250.0 and row["e2e_ms"] == 500.0
    assert row["send_lag_ms"] == 250.0
    assert row["ttft_from_intended_ms"] == 500.0 and row["e2e_from_intended_ms"] == 750.0


def test_tokens_without_text_still_end_the_decode_for_tpot():
    # ignore_eos: after the model's own end, tokens decode to "" but are still streamed and counted
    rec = feed_all([(1.1, sse(completion("a"))), (1.2, sse(completion("b"))), (1.3, sse(completion(""))),
                    (1.5, sse(completion(""))),
                    (1.5, sse({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}) + sse("[DONE]"))],
                   end=1.6)
    assert (rec.text_chunks, rec.choice_events, rec.completion_tokens) == (2, 4, 4)
    assert rec.tpot_s == pytest.approx((1.5 - 1.1) / 3) and rec.chunk_gaps_s == pytest.approx([0.1])


def test_a_stream_whose_tokens_all_decode_to_no_text_still_has_ttft_and_tpot():
    rec = feed_all([(1.2, sse(completion(""))), (1.3, sse(completion(""))), (1.4, sse(completion(""))),
                    (1.4, sse({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 3}}) + sse("[DONE]"))],
                   end=1.5)
    assert rec.text_chunks == 0 and rec.ttft_s == pytest.approx(0.2) and rec.tpot_s == pytest.approx(0.1)
    assert rec.ttfa_s is None
