from pathlib import Path

import factory

from flywheel.models import Interaction, Project
from flywheel.services.interactions import interaction_record
from retrain.curation.pipeline import interactions_curate
from retrain.models import InstructionExample


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")
    slug = factory.Sequence(lambda n: f"project-{n}")


SERVED_PASSAGE = {
    "rank": 1,
    "title": "Billing",
    "heading": "Billing > Refunds",
    "text": "Refunds within 14 days.",
    "score": 0.03,
    "chunk_id": 1,
}


def served(project, question: str, answer: str = "You can ask for a refund.") -> Interaction:
    return interaction_record(
        project=project,
        source=Interaction.Source.CHAT,
        messages=[{"role": "user", "content": question}],
        query_text=question,
        response=answer,
        retrieved=[SERVED_PASSAGE],
        metadata={"flywheel": {"rag": True}},
    )


def curate(project, *interactions) -> dict:
    interactions_curate(project=project, interaction_ids=[i.pk for i in interactions])
    return {
        example.interaction_id: example
        for example in InstructionExample.objects.filter(interaction__in=interactions)
    }


PARAPHRASES = [
    ["How do I get a refund?", "How can I get a refund?", "how do i get a refund"],
    ["How long are deleted notes kept?", "How long do deleted notes stay in the bin?"],
    ["What does Canopy cost?", "How much is the Canopy plan?"],
    ["How do I share a shelf?"],
    ["What does Grove cost?"],
]


FACTS = [
    ("What does Orbwell Plus cost?", "Orbwell Plus costs 17 kroner a month."),
    ("Who makes Orbwell?", "Orbwell is made by Quibble Labs in Tromsø."),
    ("What colour is the Orbwell logo?", "The Orbwell logo is teal with an orange dot."),
    ("How many devices can Orbwell sync?", "Orbwell syncs up to nine devices."),
    ("How long does Orbwell keep deleted notes?", "Deleted notes stay in the bin for 45 days."),
    ("Which shortcut opens Orbwell search?", "Press Ctrl+Period to open Orbwell search."),
    ("What is an Orbwell shelf?", "A shelf is a folder of notes you can share."),
    ("When was Orbwell released?", "Orbwell was released on 3 March 2031."),
]


def conversation_prompt(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


LABELLED_SET = Path(__file__).parent / "data" / "retrieval"


SYSTEM_PROMPT = "You answer questions about Orbwell, a note-taking app."
