{#- Jenkins build finished successfully: roll the build out with the `release` state.
    Body as the Jenkins Notification plugin sends it: {"name", "build": {"phase", "status", "number"}}. -#}
{%- set build = data.get('post', {}).get('build', {}) %}
{%- if build.get('phase') in ('COMPLETED', 'FINALIZED') and build.get('status') == 'SUCCESS' %}
jenkins_release:
  local.state.apply:
    - tgt: 'roles:web'
    - tgt_type: grain
    - args:
      - queue: True          # wait for a state run already in progress instead of failing
      - mods: release
      - pillar:
          release_job: {{ data['post'].get('name', '') | yaml_dquote }}
          release_build: {{ build.get('number', 0) | int }}
{%- endif %}
