"""What the smoke step calls healthy and what it rejects, one answer at a time."""

from tasks.rollout.smoke import chat_problems

H = {"azureml-model-deployment": "green"}


def answer(content="Winter.", reasoning="Compare both.", usage=True):
    body = {"choices": [{"message": {"role": "assistant", "content": content, "reasoning": reasoning}}]}
    if usage:
        body["usage"] = {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}
    return body


def test_healthy_answer_has_no_problems():
    assert chat_problems(200, H, answer(), "green") == []


def test_each_fault_is_named():
    assert chat_problems(500, H, "boom", "green") == ["HTTP 500: boom"]
    assert chat_problems(200, {"azureml-model-deployment": "blue"}, answer(), "green") == [
        "served by 'blue', not 'green'"
    ]
    assert chat_problems(200, H, answer(content=" "), "green") == ["empty answer (content)"]
    assert "no separated reasoning" in chat_problems(200, H, answer(reasoning=None), "green")[0]
    assert chat_problems(200, H, answer(content="x</think>y"), "green") == ["</think> leaked into the answer"]
    assert chat_problems(200, H, answer(usage=False), "green") == ["no usage.completion_tokens"]
    assert chat_problems(200, H, {"error": "x"}, "green") == ["no choices[0].message in the answer"]
