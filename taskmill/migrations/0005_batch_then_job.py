from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("taskmill", "0004_concurrency_locks")]

    operations = [
        migrations.AddField(
            model_name="batch",
            name="then_job",
            field=models.JSONField(blank=True, null=True),
        ),
    ]
