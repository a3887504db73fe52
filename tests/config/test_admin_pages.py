"""The Django admin as operators meet it: every model list answers, named in proper English."""

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.urls import reverse


@pytest.mark.django_db
def test_the_admin_index_names_every_model_properly_and_each_list_answers(client):
    operator = get_user_model().objects.create_superuser("operator", password="pw-operator")
    client.force_login(operator)

    index = client.get(reverse("admin:index")).content.decode()

    assert "Curation policies" in index
    assert "policys" not in index
    for model in admin.site._registry:
        opts = model._meta
        changelist = client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        assert changelist.status_code == 200, opts.label
