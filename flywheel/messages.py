"""Chat messages in the OpenAI shape: `[{"role": ..., "content": ...}, ...]`."""


def last_user_message(messages: list[dict]) -> str:
    """The question a chat asks: its last user message ("" when there is none)."""
    return next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
