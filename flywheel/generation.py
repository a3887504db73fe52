"""Generation backends behind one interface.

`LocalBackend` runs a local transformers model with, optionally, the LoRA adapter of a model
version. `OpenAICompatibleBackend` calls any server that speaks the OpenAI chat completions
API (vLLM, Ollama, llama.cpp's server, or another Flywheel).
"""

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

import requests
from django.conf import settings

from flywheel.artifacts import ArtifactNotFound, ArtifactStoreUnavailable, artifact_folder
from flywheel.ml.bundled import base_model_path
from flywheel.ml.loading import GeneratedText, load_generator
from flywheel.models import GenerationBackend, ModelVersion, Project


class GenerationError(RuntimeError):
    """The backend could not produce an answer (a remote server failed or is unreachable)."""


@dataclass(frozen=True)
class GenerationParameters:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)


def _cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    positions = [text.find(marker) for marker in stop if marker and marker in text]
    if not positions:
        return text, False
    return text[: min(positions)], True


class Backend(ABC):
    model_name: str

    @abstractmethod
    def generate(self, messages: list[dict], parameters: GenerationParameters) -> GeneratedText: ...

    @abstractmethod
    def stream(
        self, messages: list[dict], parameters: GenerationParameters
    ) -> Iterator[str | GeneratedText]:
        """Text pieces as they come, then one GeneratedText with the whole answer and usage."""

    @abstractmethod
    def write(self, prompt: str, max_tokens: int) -> str:
        """A one-off instruction (query rewriting, HyDE): the text that answers `prompt`."""


class LocalBackend(Backend):
    def __init__(self, *, base_model: str, adapter_path: str = "", model_name: str):
        self.base_model = base_model
        self.adapter_path = adapter_path
        self.model_name = model_name

    def _adapter_folder(self) -> str | None:
        """The adapter as a local folder, fetched from the artifact store on first use."""
        if not self.adapter_path:
            return None
        try:
            return str(artifact_folder(self.adapter_path))
        except (ArtifactNotFound, ArtifactStoreUnavailable) as error:
            message = f"the adapter of {self.model_name} is unavailable: {error}"
            raise GenerationError(message) from error

    def write(self, prompt: str, max_tokens: int) -> str:
        """A one-off instruction (query rewriting, HyDE) with the base model."""
        return (
            load_generator(self.base_model)
            .chat([{"role": "user", "content": prompt}], max_new_tokens=max_tokens)
            .text
        )

    def generate(self, messages, parameters):
        result = load_generator(self.base_model).chat(
            messages,
            max_new_tokens=parameters.max_tokens,
            temperature=parameters.temperature,
            top_p=parameters.top_p,
            adapter_path=self._adapter_folder(),
        )
        text, stopped = _cut_at_stop(result.text, parameters.stop)
        if stopped:
            result.text, result.finish_reason = text.strip(), "stop"
        return result

    def stream(self, messages, parameters):
        generator = load_generator(self.base_model)
        pieces = generator.chat_stream(
            messages,
            max_new_tokens=parameters.max_tokens,
            temperature=parameters.temperature,
            top_p=parameters.top_p,
            adapter_path=self._adapter_folder(),
        )
        sent = ""
        try:
            for piece in pieces:
                if isinstance(piece, GeneratedText):
                    yield piece
                    return
                text, stopped = _cut_at_stop(sent + piece, parameters.stop)
                if len(text) > len(sent):
                    yield text[len(sent) :]
                sent = text
                if stopped:
                    break
        finally:
            pieces.close()  # stops the generation when we leave early
        yield GeneratedText(
            text=sent.strip(),
            prompt_tokens=generator.count_prompt_tokens(messages),
            completion_tokens=generator.count_tokens(sent),
            finish_reason="stop",
        )


class OpenAICompatibleBackend(Backend):
    def __init__(self, *, base_url: str, model: str, api_key: str = "", timeout: float = 120):
        if not base_url or not model:
            raise GenerationError("the remote backend needs a base URL and a model name")
        self.base_url = base_url.rstrip("/")
        self.model_name = model
        self.api_key = api_key
        self.timeout = timeout

    def _post(self, payload: dict, *, stream: bool) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = requests.post(
                f"{self.base_url}/chat/completions",
                json={"model": self.model_name, **payload},
                headers=headers,
                timeout=self.timeout,
                stream=stream,
            )
        except requests.RequestException as error:
            raise GenerationError(f"the model server at {self.base_url} failed: {error}") from error
        if response.status_code >= 400:
            raise GenerationError(
                f"the model server at {self.base_url} answered {response.status_code}: "
                f"{response.text[:300]}"
            )
        return response

    @staticmethod
    def _payload(messages: list[dict], parameters: GenerationParameters) -> dict:
        payload = {
            "messages": messages,
            "max_tokens": parameters.max_tokens,
            "temperature": parameters.temperature,
        }
        if parameters.top_p is not None:
            payload["top_p"] = parameters.top_p
        if parameters.stop:
            payload["stop"] = parameters.stop
        return payload

    def write(self, prompt: str, max_tokens: int) -> str:
        return self.generate(
            [{"role": "user", "content": prompt}], GenerationParameters(max_tokens=max_tokens)
        ).text

    def generate(self, messages, parameters):
        body = self._post(self._payload(messages, parameters), stream=False).json()
        try:
            choice = body["choices"][0]
            usage = body.get("usage") or {}
            return GeneratedText(
                text=(choice["message"].get("content") or "").strip(),
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                finish_reason=choice.get("finish_reason") or "stop",
            )
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise GenerationError(f"unexpected answer from {self.base_url}: {error}") from error

    def stream(self, messages, parameters):
        payload = self._payload(messages, parameters) | {
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        response = self._post(payload, stream=True)
        pieces: list[str] = []
        usage: dict = {}
        finish_reason = "stop"
        try:
            for line in response.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                usage = event.get("usage") or usage
                for choice in event.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        pieces.append(piece)
                        yield piece
                    finish_reason = choice.get("finish_reason") or finish_reason
        except (requests.RequestException, ValueError) as error:
            raise GenerationError(f"the stream from {self.base_url} broke: {error}") from error
        finally:
            response.close()
        yield GeneratedText(
            text="".join(pieces).strip(),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=finish_reason,
        )


def backend_for(*, project: Project, model_version: ModelVersion | None) -> Backend:
    """The backend that serves `project` with `model_version` (its production version)."""
    kind = project.generation_backend or settings.FLYWHEEL_GENERATION_BACKEND
    if kind == GenerationBackend.OPENAI:
        # A remote server (vLLM) serves each LoRA adapter under the model version's name.
        serves_adapter = model_version is not None and model_version.adapter_path
        return OpenAICompatibleBackend(
            base_url=project.remote_base_url or settings.FLYWHEEL_REMOTE_BASE_URL,
            model=(model_version.name if serves_adapter else "")
            or project.remote_model
            or settings.FLYWHEEL_REMOTE_MODEL,
            api_key=settings.FLYWHEEL_REMOTE_API_KEY,
            timeout=settings.FLYWHEEL_REMOTE_TIMEOUT_SECONDS,
        )
    base_model = (model_version.base_model if model_version else "") or str(base_model_path())
    return LocalBackend(
        base_model=base_model,
        adapter_path=model_version.adapter_path if model_version else "",
        model_name=model_version.name if model_version else base_model.rstrip("/").split("/")[-1],
    )
