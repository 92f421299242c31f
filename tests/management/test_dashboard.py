"""The dashboard in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium)."""
from __future__ import annotations

import shutil

import pika
import pytest

from .helpers import TIMEOUT_S, base_url, session

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are needed (.ci/run installs them with apt-get)")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)  # generous: Chromium on a loaded machine is slow
    yield driver
    driver.quit()


def wait(driver, condition, timeout_s=60, what="the page"):
    # The page re-renders its table every few seconds: an element found just before that is
    # stale, so the condition is simply tried again.
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout_s, poll_frequency=0.1,
                         ignored_exceptions=[StaleElementReferenceException]).until(
        lambda d: condition(d), message=f"timed out waiting for {what}")


def click_action(driver, row_key, action):
    """Click a row's action button (retried if the table re-rendered in between)."""
    from selenium.webdriver.common.by import By

    def click(d):
        d.find_element(By.CSS_SELECTOR, f'#table tbody tr[data-name="{row_key}"] '
                                        f'button[data-action="{action}"]').click()
        return True
    wait(driver, click, what=f"the {action} button of {row_key}")


def sign_in(driver, url):
    from selenium.webdriver.common.by import By
    driver.get(url + "/")
    wait(driver, lambda d: d.find_element(By.ID, "login-user").is_displayed(),
         what="the sign-in form")
    driver.find_element(By.ID, "login-user").send_keys("guest")
    driver.find_element(By.ID, "login-password").send_keys("guest")
    driver.find_element(By.ID, "login-submit").click()
    wait(driver, lambda d: d.find_element(By.ID, "main").is_displayed(), what="the dashboard")


def cell(driver, row_key, column):
    from selenium.webdriver.common.by import By
    rows = driver.find_elements(By.CSS_SELECTOR, f'#table tbody tr[data-name="{row_key}"]')
    if not rows:
        return None
    return rows[0].find_element(By.CSS_SELECTOR, f'td[data-col="{column}"]').text.strip()


def test_charts_queue_table_and_purge(make_broker, browser):
    from selenium.webdriver.common.by import By
    broker = make_broker(management={"sample_interval_s": 0.5})
    url = base_url(broker)
    sign_in(browser, url)
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.ports["amqp"]))
    try:
        ch = conn.channel()
        ch.queue_declare("dashboard-q")
        for i in range(7):
            ch.basic_publish("", "dashboard-q", f"m{i}".encode())
        # the queue declared over AMQP appears with its depth
        wait(browser, lambda d: cell(d, "//dashboard-q", "messages") == "7",
             what="dashboard-q with 7 messages in the queue table")
        # the charts draw from live data: uPlot canvases exist and the depth chart's last
        # point is the 7 ready messages
        wait(browser, lambda d: d.find_element(By.ID, "chart-depth").get_attribute("data-last")
             == "[7,0]", what="the depth chart to reach 7 ready")
        for chart in ("chart-rates", "chart-depth", "chart-memory"):
            element = browser.find_element(By.ID, chart)
            assert int(element.get_attribute("data-points")) >= 2
            canvas = element.find_element(By.TAG_NAME, "canvas")
            assert canvas.size["width"] > 100 and canvas.size["height"] > 50
        wait(browser, lambda d: d.find_element(By.ID, "card-messages").text == "7",
             what="the messages card to show 7")
        # purge from the page, with confirmation
        click_action(browser, "//dashboard-q", "purge")
        wait(browser, lambda d: d.find_element(By.ID, "dialog").is_displayed(),
             what="the confirmation dialog")
        assert "dashboard-q" in browser.find_element(By.ID, "dialog-title").text
        assert session().get(url + "/api/queues/%2F/dashboard-q",
                             timeout=TIMEOUT_S).json()["messages"] == 7  # not before confirming
        browser.find_element(By.ID, "dialog-ok").click()
        wait(browser, lambda d: cell(d, "//dashboard-q", "messages") == "0",
             what="the purged queue to show 0")
        assert session().get(url + "/api/queues/%2F/dashboard-q",
                             timeout=TIMEOUT_S).json()["messages"] == 0
        assert ch.queue_declare("dashboard-q", passive=True).method.message_count == 0
    finally:
        conn.close()


def test_search_and_sort(make_broker, browser):
    from selenium.webdriver.common.by import By
    broker = make_broker(management={"sample_interval_s": 0.5})
    s, url = session(), base_url(broker)
    for name, count in (("alpha", 1), ("beta", 3), ("gamma", 2)):
        s.put(url + f"/api/queues/%2F/{name}", json={}, timeout=TIMEOUT_S).raise_for_status()
        for _ in range(count):
            s.post(url + "/api/exchanges/%2F/amq.default/publish", timeout=TIMEOUT_S,
                   json={"routing_key": name, "payload": "x", "payload_encoding": "string",
                         "properties": {}}).raise_for_status()
    sign_in(browser, url)

    def names(d):
        return [r.get_attribute("data-name") for r in
                d.find_elements(By.CSS_SELECTOR, "#table tbody tr")]
    wait(browser, lambda d: len(names(d)) == 3, what="three queues")
    browser.find_element(By.CSS_SELECTOR, '#table th[data-key="messages"]').click()
    wait(browser, lambda d: names(d) == ["//beta", "//gamma", "//alpha"], what="sorted rows")
    browser.find_element(By.ID, "search").send_keys("gam")
    wait(browser, lambda d: names(d) == ["//gamma"], what="the filtered row")
    # a stream offers no get or purge (streams cannot be purged)
    s.put(url + "/api/queues/%2F/log", json={"durable": True,
                                             "arguments": {"x-queue-type": "stream"}},
          timeout=TIMEOUT_S).raise_for_status()
    search = browser.find_element(By.ID, "search")
    search.clear()
    search.send_keys("log")
    wait(browser, lambda d: names(d) == ["//log"], what="the stream row")
    wait(browser, lambda d: [b.get_attribute("data-action") for b in d.find_elements(
        By.CSS_SELECTOR, '#table tbody tr[data-name="//log"] button')] == ["publish", "delete"],
         what="only publish and delete on the stream row")


def test_unreachable_broker_is_said_clearly(tmp_path, browser):
    from selenium.webdriver.common.by import By

    from tests.conftest import RunningBroker, broker_settings
    broker = RunningBroker(broker_settings(tmp_path)).start()
    url = base_url(broker)
    try:
        sign_in(browser, url)
    finally:
        broker.stop()
    wait(browser, lambda d: d.find_element(By.ID, "unreachable").is_displayed(),
         what="the unreachable banner")
    assert browser.find_element(By.ID, "status").text == "broker unreachable"
    assert "Broker unreachable" in browser.find_element(By.ID, "unreachable").text


def test_phone_sized_screen_has_no_sideways_scroll(running_broker, browser):
    from selenium.webdriver.common.by import By
    browser.set_window_size(390, 844)
    sign_in(browser, base_url(running_broker))
    wait(browser, lambda d: d.find_element(By.ID, "chart-rates").get_attribute("data-points"),
         what="the first chart data")
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0


def test_aws_tabs_show_sqs_sns_and_kinesis(running_broker, browser):
    import json

    from selenium.webdriver.common.by import By

    from tests.integration.aws_helpers import aws_client
    sqs = aws_client(running_broker, "sqs")
    dlq_arn = sqs.get_queue_attributes(
        QueueUrl=sqs.create_queue(QueueName="jobs-dlq")["QueueUrl"],
        AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    jobs = sqs.create_queue(QueueName="jobs", Attributes={"RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})})["QueueUrl"]
    for _ in range(3):
        sqs.send_message(QueueUrl=jobs, MessageBody="j")
    sns = aws_client(running_broker, "sns")
    topic = sns.create_topic(Name="news")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=dlq_arn)
    aws_client(running_broker, "kinesis").create_stream(StreamName="taps", ShardCount=2)
    sign_in(browser, base_url(running_broker))

    def open_tab(name):
        browser.find_element(By.CSS_SELECTOR, f'.tabs button[data-tab="{name}"]').click()

    open_tab("sqs")
    wait(browser, lambda d: cell(d, "jobs", "approximate_number_of_messages") == "3",
         what="the jobs queue with 3 visible messages")
    assert cell(browser, "jobs", "redrive_policy") == "jobs-dlq after 5"
    open_tab("sns")
    wait(browser, lambda d: cell(d, "news", "subscriptions") == f"sqs: {dlq_arn}",
         what="the news topic with its SQS subscription")
    assert cell(browser, "news", "subscriptions_confirmed") == "1"
    open_tab("kinesis")
    wait(browser, lambda d: cell(d, "taps", "open_shards") == "2", what="the taps stream")
