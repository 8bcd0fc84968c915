{#- A CloudWatch alarm delivered by Amazon SNS: run the `alert-response` state on the web servers
    when the alarm enters ALARM. saltgate verified the SNS signature (with the certificate from
    sns.<region>.amazonaws.com), the topic and the timestamp before this event was fired; the
    alarm itself is the JSON text in `Message`. -#}
{%- set post = data.get('post', {}) %}
{%- if post.get('Type') == 'Notification' %}
{%-   set alarm = post.get('Message', '{}') | load_json %}
{%-   if alarm.get('NewStateValue') == 'ALARM' %}
sns_alarm_response:
  local.state.apply:
    - tgt: 'roles:web'
    - tgt_type: grain
    - args:
      - queue: True          # wait for a state run already in progress instead of failing
      - mods: alert-response
      - pillar:
          alert_name: {{ alarm.get('AlarmName', 'unknown') | yaml_dquote }}
{%-   endif %}
{%- endif %}
